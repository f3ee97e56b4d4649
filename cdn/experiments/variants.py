"""Which parameterisation of ``log p(y, c)`` denoises (chapter 10, "GradResNet as a UNet").

Every GradResNet variant of ``cdn.nets.VARIANTS`` is trained with the same data, seed, steps, width and
recipe, in float32 and under bf16 autocast, and measured the same way (``probe``); ``compare`` writes
the table to ``results/architecture-quick.json``; ``choose_default`` applies the rule chapter 10 states
before the numbers. ``homogeneity_degree`` measures the degree ``k`` of the score,
``s(a y) = a^k s(y)``, on pure-noise inputs; ``term_gradient_norms`` splits the parameter gradient of
the joint loss into its cross-entropy and score-matching parts (the 64x64 analysis).

Command line (the one that wrote the committed file)::

    python -m cdn variants --dataset cifar10 --precision float32 bf16 --out results/architecture-quick.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import data as data_mod
from ..checkpoint import atomic_write_text
from ..joint import JointModel
from ..losses import add_noise, dsm_per_image
from ..profiles import get_config
from ..provenance import data_record, git_commit
from ..runs import get_or_train, load_run, resolve_data, runs_root
from ..train import make_loss

#: (variant, noise_conditioning) measured in chapter 10, in the order of its table
CANDIDATES: tuple[tuple[str, bool], ...] = (
    ("gradresnet-preact-logenergy", False),
    ("gradresnet-homog-quadratic", False),
    ("gradresnet-homog-logquad", False),
    ("gradresnet-homog-quadratic", True),
    ("gradresnet-preact-linear", False),
    ("gradresnet-preact-quadratic", False),
    ("gradresnet-homog-logenergy", False),
    ("gradresnet-preact-logenergy", True),
)
#: the probe's recipe: the quick profile's width, batch and learning rate, a 300-step budget
PROBE = {"cifar10": dict(steps=300, warmup_steps=30, test_size=1000),
         "tiny-imagenet": dict(steps=300, warmup_steps=30, test_size=1000)}
ACC_SIGMAS = (0.0, 0.2)
#: the committed comparison (chapter 10)
RESULTS = data_mod.REPO_ROOT / "results" / "architecture-quick.json"
PSNR_SIGMAS = (0.05, 0.1, 0.2)


def entry_name(arch: str, noise_conditioning: bool, objective: str = "joint") -> str:
    """The key of a variant in the results: its ``build_net`` name, ``-cond`` when noise-conditioned,
    ``-ce`` when trained on cross-entropy alone (a GradResNet variant as a plain classifier)."""
    return arch + ("-cond" if noise_conditioning else "") + ("-ce" if objective == "ce" and arch != "resnet18" else "")




def homogeneity_degree(model: JointModel, shape, sigma: float = 0.1, scales=(0.5, 2.0), n: int = 16,
                       seed: int = 0) -> dict:
    """The degree ``k`` of the score on pure noise ``y = sigma eps``: per image and scale ``a``,
    ``k = log(|s(a y)| / |s(y)|) / log a`` with ``s = grad_y logsumexp_c f(y)_c`` (a noise-conditioned
    network is told ``a sigma``); returns the median ``k`` and the median cosine between ``s(a y)``
    and ``s(y)`` (1 when the direction is kept). A noise-blind denoiser needs ``k = -1``: the score
    of ``N(0, sigma^2 I)`` is ``-y / sigma^2``."""
    g = torch.Generator().manual_seed(seed)
    param = next(model.parameters())
    y = (sigma * torch.randn((n, *shape), generator=g, dtype=torch.float64)).to(param.device, param.dtype)
    s0 = model.score(y, sigma).flatten(1).double()
    ks, cos = [], []
    for a in scales:
        sa = model.score(a * y, a * sigma).flatten(1).double()
        ks.append(torch.log(sa.norm(dim=1) / s0.norm(dim=1)) / math.log(a))
        cos.append(F.cosine_similarity(sa, s0, dim=1))
    return {"degree": torch.cat(ks).median().item(), "cosine": torch.cat(cos).median().item(),
            "sigma": sigma, "scales": list(scales), "n": n}


def term_gradient_norms(model: JointModel, x: torch.Tensor, c: torch.Tensor, sigma: torch.Tensor,
                        lam: float = 1.0, seed: int = 0) -> dict:
    """The parameter-gradient norms of the two terms of the joint loss on one batch,
    ``|d CE / d theta|`` and ``|d (lam DSM) / d theta|``, and of the log-energy convolution alone when
    the network has one (which term drives the training, chapter 10's 64x64 analysis)."""
    g = torch.Generator(device=x.device).manual_seed(seed)
    y, eps = add_noise(x, sigma, g)
    params = [p for p in model.parameters() if p.requires_grad]
    logits, score = model.logits_and_score(y, sigma, create_graph=True)
    ce = F.cross_entropy(logits.float(), c)
    dsm = lam * dsm_per_image(score, eps, sigma).mean()
    out = {}
    for name, term in (("ce", ce), ("dsm", dsm)):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        out[f"grad_{name}"] = math.sqrt(sum(float(gr.pow(2).sum()) for gr in grads if gr is not None))
    out["ce"], out["dsm"] = ce.item(), dsm.item()
    return out


def probe(arch: str, dataset: str = "cifar10", precision: str = "float32", noise_conditioning: bool = False,
          data_dir=None, device=None, **overrides) -> dict:
    """Train (or reuse, ``cdn.runs``) ``arch`` as a joint model for the probe's budget (``PROBE``) and
    measure it: clean accuracy and at sigma = 0.2, PSNR of ``D(y)`` and ``D(y, true c)`` at sigma =
    0.05 / 0.1 / 0.2, the final DSM and CE (mean of the last 30 logged steps), ms per step, the
    homogeneity degree of its score. ``arch`` may also be ``resnet18`` (cross-entropy alone)."""

    model_name = arch
    settings = {**PROBE[dataset], **overrides}
    config = get_config("quick", model_name, dataset, precision=precision,
                        noise_conditioning=noise_conditioning, **settings)
    if arch != config.arch:
        raise ValueError(f"{arch!r} did not resolve to its own architecture ({config.arch!r})")
    data = resolve_data(config, data_dir)
    run = get_or_train(config, data, device=device, progress=False)
    metrics = run.metrics(data.test, sigmas=ACC_SIGMAS, denoise_sigmas=PSNR_SIGMAS if config.objective == "joint" else ())
    log = run.log()
    tail = [r for r in log if r["step"] > config.steps - 30]
    row = {"arch": arch, "noise_conditioning": noise_conditioning, "precision": precision, "run": run.name,
           "objective": config.objective, "lam": config.lam,
           "steps": config.steps, "batch_size": config.batch_size, "width": config.width, "lr": config.lr,
           "test_images": len(data.test), "classes": data.test.num_classes,
           "clean_accuracy": metrics["classification"][0]["accuracy"],
           "accuracy_sigma_0.2": metrics["classification"][1]["accuracy"],
           "ce": sum(r["ce"] for r in tail) / max(1, len(tail)),
           "ms_per_step": 1000 * run.state["elapsed_s"] / max(1, run.state["step"])}
    if config.objective == "joint":
        row["dsm"] = sum(r["dsm"] for r in tail) / max(1, len(tail))
        for r in metrics["denoising"]:
            s = r["sigma"]
            row[f"psnr_noisy_{s}"] = r["noisy"]
            row[f"psnr_D(y)_{s}"] = r["D(y)"]
            row[f"psnr_D(y,c)_{s}"] = r["D(y,c)"]
        shape = tuple(data.test.images.shape[1:])
        row["homogeneity"] = homogeneity_degree(run.model, shape)
        row["gradient_norms"] = final_gradient_norms(run, data.train, config)
    return row


def final_gradient_norms(run, train_set, config) -> dict:
    """``term_gradient_norms`` of a trained run on a fixed batch (``batch_size`` training images drawn
    with seed 0, sigma from the run's sampler with seed 0), in float32."""

    idx = train_set.sample_indices(config.batch_size, 0)
    x = train_set.to_float(idx, next(run.net.parameters()).device)
    c = train_set.labels[idx].to(x.device)
    sigma = make_loss(config).sampler(x.shape[0], torch.Generator(device=x.device).manual_seed(0), x.device)
    return term_gradient_norms(run.model, x, c, sigma, config.lam)


def add_gradient_norms(path: str | Path, data_dir=None) -> None:
    """Add ``gradient_norms`` to the joint rows of a results file that lack them (rows written before
    it was measured), from their runs in ``cdn.runs.runs_root()``."""

    results = load_results(path)
    for dataset, entries in results.get("entries", {}).items():
        for by_p in entries.values():
            for row in by_p.values():
                if row.get("objective", "joint") != "joint" or "gradient_norms" in row:
                    continue
                run = load_run(runs_root() / row["run"], "cpu")
                data = resolve_data(run.config, data_dir)
                row["gradient_norms"] = final_gradient_norms(run, data.train, run.config)
    atomic_write_text(Path(path), json.dumps(results, indent=1))


def choose_default(rows: list[dict], accuracy_margin: float = 0.01, at_64: dict[str, float] | None = None,
                   psnr_margin: float = 0.5) -> str:
    """Chapter 10's rule for the default ``gradresnet``, over the noise-blind float32 joint variants
    on CIFAR-10 (``rows``). Without ``at_64`` (the rule as first stated): of the variants whose clean
    accuracy is within ``accuracy_margin`` (1 point) of the best, the one with the best PSNR of
    ``D(y)`` at sigma = 0.1. With ``at_64`` (the amended rule, ``{arch: accuracy at 64x64 of the same
    network trained on cross-entropy alone}``): of the variants within 1 point of the best accuracy
    and within ``psnr_margin`` dB of the best PSNR at sigma = 0.1, the one that classifies best at
    64x64. Returns its ``build_net`` name."""
    pool = [r for r in rows if r["precision"] == "float32" and not r["noise_conditioning"]
            and r.get("objective", "joint") == "joint" and "psnr_D(y)_0.1" in r]
    if not pool:
        raise ValueError("no noise-blind float32 joint variant among the rows")
    best_acc = max(r["clean_accuracy"] for r in pool)
    near = [r for r in pool if r["clean_accuracy"] >= best_acc - accuracy_margin]
    if at_64 is None:
        return max(near, key=lambda r: r["psnr_D(y)_0.1"])["arch"]
    best_psnr = max(r["psnr_D(y)_0.1"] for r in near)
    near = [r for r in near if r["psnr_D(y)_0.1"] >= best_psnr - psnr_margin]
    missing = [r["arch"] for r in near if r["arch"] not in at_64]
    if missing:
        raise ValueError(f"the amended rule needs the 64x64 accuracy of {missing}")
    return max(near, key=lambda r: at_64[r["arch"]])["arch"]


def accuracy_at_64(results: dict) -> dict[str, float]:
    """``{arch: clean accuracy}`` of the float32 cross-entropy-only probes on the Tiny ImageNet subset
    (the amended rule's 64x64 criterion), at the profile's learning rate."""
    out = {}
    for by_p in results.get("entries", {}).get("tiny-imagenet", {}).values():
        r = by_p.get("float32", {})
        if r.get("objective") == "ce" and r.get("arch") != "resnet18" and r.get("lr") == 2e-3:
            out[r["arch"]] = r["clean_accuracy"]
    return out


def load_results(path: str | Path) -> dict:
    """The results file (``{"meta": ..., "entries": {dataset: {name: {precision: row}}}}``), or an
    empty one when it does not exist."""
    path = Path(path)
    if not path.exists():
        return {"meta": {}, "entries": {}}
    return json.loads(path.read_text())


COLUMNS = {"clean_accuracy": "clean acc.", "accuracy_sigma_0.2": "acc. σ=0.2",
           "psnr_D(y)_0.05": "D(y) σ=.05", "psnr_D(y)_0.1": "D(y) σ=.1", "psnr_D(y)_0.2": "D(y) σ=.2",
           "psnr_D(y,c)_0.05": "D(y,c) σ=.05", "psnr_D(y,c)_0.1": "D(y,c) σ=.1", "psnr_D(y,c)_0.2": "D(y,c) σ=.2",
           "dsm": "DSM", "ce": "CE", "degree": "degree k", "ms_per_step": "ms/step"}


def results_table(results: dict, dataset: str):
    """The rows of ``results`` for ``dataset`` as a DataFrame indexed by (variant, precision), with the
    columns of ``COLUMNS`` (PSNR in dB; ``degree k`` the homogeneity degree of the score), and the
    noisy input's PSNR as a first row for reference (chapter 10's table)."""
    import pandas as pd

    records, noisy = [], None
    for name, by_precision in results.get("entries", {}).get(dataset, {}).items():
        for precision, row in by_precision.items():
            rec = {"variant": name, "precision": precision, **{COLUMNS[k]: row.get(k) for k in COLUMNS if k != "degree"}}
            rec["degree k"] = row.get("homogeneity", {}).get("degree")
            records.append(rec)
            if "psnr_noisy_0.1" in row:
                noisy = {"variant": "noisy input y", "precision": "",
                         **{COLUMNS[f"psnr_D(y)_{s}"]: row[f"psnr_noisy_{s}"] for s in PSNR_SIGMAS}}
    if not records:
        return pd.DataFrame(columns=["variant", "precision", *COLUMNS.values()]).set_index(["variant", "precision"])
    frame = pd.DataFrame(([noisy] if noisy else []) + records)
    return frame.set_index(["variant", "precision"])[list(COLUMNS.values())]


def precision_pairs(results: dict, dataset: str = "cifar10") -> list[dict]:
    """One row per (variant, precision) of the variants probed in more than one precision on ``dataset``: clean
    accuracy, the PSNR of ``D(y)`` at sigma = 0.05, 0.1, 0.2, the final DSM loss and the milliseconds per step."""
    rows = []
    for name, by_p in results.get("entries", {}).get(dataset, {}).items():
        if len(by_p) > 1:
            for precision, r in by_p.items():
                rows.append({"variant": name, "precision": precision, "clean acc.": r["clean_accuracy"],
                             **{f"D(y) σ={s.lstrip('0')}": r.get(f"psnr_D(y)_{s}") for s in ("0.05", "0.1", "0.2")},
                             "DSM": r.get("dsm"), "ms/step": r["ms_per_step"]})
    return rows


def probe_gradient_norms(results: dict, datasets=("cifar10", "tiny-imagenet")) -> dict[str, dict]:
    """``"dataset: variant" -> {term: norm}``: each loss term's parameter-gradient norm at the end of the float32
    probe (``add_gradient_norms``), for the variants that have them."""
    return {f"{ds}: {name}": by_p["float32"]["gradient_norms"]
            for ds in datasets for name, by_p in results.get("entries", {}).get(ds, {}).items()
            if "gradient_norms" in by_p.get("float32", {})}


def compare(candidates, datasets, precisions, out: str | Path, data_dir=None, command: str = "", **overrides) -> dict:
    """Probe every (dataset, candidate, precision) and write each row to ``out`` as soon as it exists
    (an interrupted comparison keeps what it measured; a rerun reuses the trained runs)."""
    results = load_results(out)
    commit = git_commit()  # read before training: a commit made while it runs is not its code
    for dataset in datasets:
        results["meta"].setdefault("data", {})[dataset] = data_record(dataset, data_dir)
        for arch, cond in candidates:
            for precision in precisions:
                row = probe(arch, dataset, precision, cond, data_dir, **overrides)
                row["commit"], row["command"] = commit, command
                name = entry_name(arch, cond, row["objective"]) + "".join(f"-{k}{v}" for k, v in sorted(overrides.items())
                                                                         if k != "objective")
                results = load_results(out)  # another process may have added rows meanwhile
                results["meta"].setdefault("data", {})[dataset] = data_record(dataset, data_dir)
                results["entries"].setdefault(dataset, {}).setdefault(name, {})[precision] = row
                results["meta"].update(machine=f"{platform.machine()} {platform.processor()}, "
                                       f"{torch.get_num_threads()} threads", torch=torch.__version__,
                                       probe=PROBE)
                atomic_write_text(Path(out), json.dumps(results, indent=1))
                print(f"[cdn] {dataset} {entry_name(arch, cond)} {precision}: acc {row['clean_accuracy']:.3f} "
                      f"PSNR(0.1) {row.get('psnr_D(y)_0.1', float('nan')):.2f} dB, {row['ms_per_step']:.0f} ms/step",
                      flush=True)
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m cdn variants", description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", nargs="+", default=["cifar10"], choices=list(PROBE))
    p.add_argument("--precision", nargs="+", default=["float32", "bf16"])
    p.add_argument("--variant", nargs="*", default=None,
                   help="build_net names, '-cond' for noise-conditioned (default: all of CANDIDATES)")
    p.add_argument("--out", default=str(RESULTS.relative_to(data_mod.REPO_ROOT)))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--objective", default=None, choices=["joint", "ce"], help="default: the model's own")
    p.add_argument("--lam", type=float, default=None, help="weight of the DSM term (default: the profile's)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the profile's)")
    p.add_argument("--width", type=int, default=None, help="network width (default: the profile's, 16)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size (default: the profile's)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: PROBE's 300)")
    p.add_argument("--test-size", type=int, default=None, help="test images (default: PROBE's 1000)")
    a = p.parse_args(argv)
    cands = CANDIDATES
    if a.variant:
        cands = tuple((v[:-5], True) if v.endswith("-cond") else (v, False) for v in a.variant)
    overrides = {k: v for k, v in (("objective", a.objective), ("lam", a.lam), ("lr", a.lr), ("width", a.width),
                                   ("batch_size", a.batch_size), ("steps", a.steps), ("test_size", a.test_size))
                 if v is not None}
    compare(cands, a.dataset, a.precision, a.out, a.data_dir,
            command="python -m cdn variants " + shlex.join(argv or sys.argv[1:]), **overrides)

