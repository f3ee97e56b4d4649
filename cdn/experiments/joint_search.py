"""Which joint model's own features denoise (chapter 10, "GradResNet as a UNet").

In the committed runs of the default head, ``f_c = <w_c, phi(y)> - (d/2) log mean(R(y)^2)``, all of the
denoising comes from the class-independent log-energy of one 3x3 convolution ``R`` and the deep
features' part of the score contributes nothing (``cdn.evaluate.decomposed_denoisers``). This module
trains candidates at one budget long enough not to reward that shortcut (``SEARCH``: 3 epochs of
CIFAR-10 at width 16) and measures each with the decomposition beside accuracy.

The rule that picks the default, stated before any candidate was trained: at sigma = 0.1, the part of
the denoiser that passes through the network's layers (``network_psnr``: the whole ``D(y)`` when the
energy is built from the network's feature maps, the features' part alone when it is one convolution
of ``y``) must improve on the noisy input by at least ``NETWORK_GAIN_DB``; among the candidates that
pass, the highest clean accuracy wins, and within one point of accuracy the higher PSNR of ``D(y)``
at sigma = 0.1.

Amended after the first width-32 row, and why: a candidate at another width than the profiles' (16) is an
ablation, not a candidate for the default, since it changes the cost of every step (about three times at width
32); the rule as first stated let the width-32 row win within one point of accuracy. ``choose(rows, width=16)`` is
the amended rule, ``choose(rows)`` the first one; the chapter prints both.

Command line (the one that writes the committed file)::

    python -m cdn joint-search --out results/joint-search.json [--candidates NAME ...]

and the decomposition of the committed ``cpu`` joint model::

    python -m cdn joint-search --budget cpu --candidates "the default (stage-1 log-energy)" --out results/joint-cpu.json
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..committed import results_root
from ..evaluate import decomposed_denoisers, psnr_vs_sigma, score_part_sizes
from ..nets.resnet import FEATURE_ENERGY_HEADS
from ..profiles import get_config
from ..provenance import data_record, device_description, git_commit
from ..runs import get_or_train, resolve_data

#: 3 epochs of the 50,000 CIFAR-10 training images at batch 128 (the quick profile's width, batch, lr), in
#: float32 on every machine: under bf16 autocast the score of the feature-map energies is 1-3% off float32
#: (the 3x3 log-energy's 1e-4, whose input layer stays float32), and a search must not choose by rounding
SEARCH = dict(steps=1170, warmup_steps=50, test_size=2000, checkpoint_every=195, log_every=15, precision="float32")
#: the confirmation of the best candidates, and the references they are measured against, at 10 epochs (3,910
#: steps of batch 128) with the ``cpu`` profile's recipe (width 16, lr 2e-3, EMA of the weights, flip
#: test-time augmentation) but a fixed number of steps instead of its time budget, so every model sees the
#: same images (the paper's equal-epoch comparison); the full 10,000-image test set
CONFIRM = dict(steps=3910, time_budget_s=None, precision="float32")
#: the ``cpu`` profile's own configuration, unchanged: its committed runs (``results/cpu-cifar10/``) are
#: measured as they are, without training
PROFILE_RUN: dict = {}
#: name -> (profile the settings start from, overrides)
BUDGETS = {"search": ("quick", SEARCH), "confirm": ("cpu", CONFIRM), "cpu": ("cpu", PROFILE_RUN)}
#: name -> (model, overrides): the candidates, each one change from the default
CANDIDATES: dict[str, tuple[str, dict]] = {
    "stage-1 log-energy, lam 10": ("gradresnet-stage1energy", {"lam": 10.0}),
    "cross-entropy on the same noisy images": ("gradresnet-ce-noisy", {}),
    # the first default; its rows were measured when the model "gradresnet" was this network
    "default (3x3 log-energy)": ("gradresnet-logenergy", {}),
    # the default since the search (the model "gradresnet"): with --budget cpu, the committed cpu run itself
    "the default (stage-1 log-energy)": ("gradresnet", {}),
    "all-stages log-energy, lam 10": ("gradresnet-stagesenergy", {"lam": 10.0}),
    "stage-1 log-energy": ("gradresnet-stage1energy", {}),
    "no energy, lam 300": ("gradresnet-nologenergy", {"lam": 300.0}),
    "all-stages log-energy": ("gradresnet-stagesenergy", {}),
    "stage-1 log-energy, lam 10, EDM's log-normal sigma": ("gradresnet-stage1energy",
                                                          {"lam": 10.0, "sigma_distribution": "log_normal"}),
    "stage-1 log-energy, lam 3": ("gradresnet-stage1energy", {"lam": 3.0}),
    "stage-1 log-energy, lam 10, cross-entropy on clean and noisy": ("gradresnet-stage1energy",
                                                                    {"lam": 10.0, "ce_on": "both"}),
    # the two 3-epoch gains together (log-normal sigma: +1 dB of D(y); clean and noisy cross-entropy: +4.8 points
    # of clean accuracy) at the ten-epoch rule's lam
    "stage-1 log-energy, lam 3, log-normal sigma, cross-entropy on clean and noisy": (
        "gradresnet-stage1energy", {"lam": 3.0, "sigma_distribution": "log_normal", "ce_on": "both"}),
    # lam set during training so that the two terms' parameter gradients have equal norms (cdn.train.balanced_lam,
    # measured every 10 steps), starting from lam 3
    "stage-1 log-energy, lam balanced by gradient norms": ("gradresnet-stage1energy",
                                                           {"lam": 3.0, "lam_balance_every": 10}),
    # the energy of the later public GradResNet of the authors' group (post-activation blocks, homogeneous
    # GroupNorm, side connections concatenated, E = s mean(phi^2) / 2 of the pooled features), noise-conditioned:
    # a quadratic energy of degree-1 features has a score of degree 1, which a noise-blind net cannot rescale
    "the later network's quadratic energy, noise-conditioned": ("gradresnet-homog-quadratic",
                                                                 {"noise_conditioning": True}),
    "stage-1 log-energy, lam 10, width 32": ("gradresnet-stage1energy", {"lam": 10.0, "width": 32}),
    "stage-1 log-energy, lam 10, noise-conditioned": ("gradresnet-cond", {"lam": 10.0}),
    "cross-entropy on the same noisy images, width 32": ("gradresnet-ce-noisy", {"width": 32}),
    "last-stage log-energy": ("gradresnet-stage4energy", {}),
    # the baseline of the row above: its classifier term (clean and noisy images, log-normal sigma) without score
    # matching
    "cross-entropy on clean and noisy images, log-normal sigma": ("gradresnet-ce-noisy",
                                                                  {"ce_on": "both", "sigma_distribution": "log_normal"}),
    # references for the confirmation budget
    "cross-entropy on clean images": ("gradresnet-ce", {}),
    # the UNet's first recipe, the log-uniform sigma (its rows were measured with it), and the UNet as the profiles
    # train it since the joint model's sigma law changed: the same law as the joint model's
    "UNet (denoising only)": ("unet", {"sigma_distribution": "log_uniform"}),
    "UNet (denoising only), log-normal sigma": ("unet", {"sigma_distribution": "log_normal"}),
    # the DnCNN as cdn.profiles trains it now: DnCNN-B's recipe (sigma uniform in [0, 55/255], unweighted MSE,
    # lr 1e-3) and its last convolution initialised at zero. The rows "DnCNN, DnCNN-B's recipe" and "DnCNN,
    # unweighted MSE" of results/joint-search.json, and the 10-epoch "DnCNN (denoising only)" row of
    # results/joint-confirm.json, were trained before that change (PyTorch's initialisation, lr 2e-3, the joint
    # model's sigma distribution and weighting unless the row's overrides say otherwise): they stayed at the identity
    "DnCNN (denoising only)": ("dncnn", {}),
}
#: where each head's class-independent energy is computed (which part of the score passes through the network)
ENERGY_SOURCE = {"logenergy": "one 3x3 convolution of y", "stage1energy": "the network's stage-1 feature map",
                 "stagesenergy": "the network's four stage feature maps",
                 "stage4energy": "the network's last-stage feature map (the one the read-out pools)", "quadratic": "the pooled features",
                 "logquad": "the pooled features", "linear": None}
SIGMAS = (0.05, 0.1, 0.2)
DENOISE_IMAGES = 500
NETWORK_GAIN_DB = 1.0
#: the width of the quick and cpu profiles: the amended rule chooses among candidates at this width only
DEFAULT_WIDTH = 16


def measure(name: str, data_dir=None, device: str = "cpu", profile: str = "quick", dataset: str = "cifar10",
            budget: dict | None = None) -> dict:
    """Train (or reuse, ``cdn.runs.get_or_train``) the candidate ``name`` of ``CANDIDATES`` at ``budget``
    (default ``SEARCH``; ``BUDGETS`` names the profile each starts from) and measure it: clean accuracy and at
    sigma = 0.2 (the budget's test set), the PSNR of ``D(y)`` on that whole test set at ``SIGMAS``, the decomposition of its
    denoiser at ``SIGMAS`` (PSNR of ``D(y)``, of the energy alone, of the features alone, ``D(y, c)`` for the
    true and a wrong class; a class-balanced seeded subset of ``DENOISE_IMAGES`` test images), the size of each part of the score,
    and each loss term's parameter-gradient norm at the last logged checkpoint. ``profile``, ``dataset`` and
    ``budget`` (default ``SEARCH``) are there for the tests."""

    model, overrides = CANDIDATES[name]
    config = get_config(profile, model, dataset, **{**(SEARCH if budget is None else budget), **overrides})
    data = resolve_data(config, data_dir)
    run = get_or_train(config, data, device=device, progress=False)
    metrics = run.metrics(data.test, sigmas=(0.0, 0.2), denoise_sigmas=SIGMAS)
    log = run.log()
    row = {"candidate": name, "model": model, "run": run.name, "overrides": overrides,
           "steps": run.state["step"], "epochs": run.state["epochs"], "train_time_s": run.state["elapsed_s"],
           "precision": run.state.get("autocast"), "test_images": len(data.test),
           "final_ce": _tail_mean(log, "ce"), "final_dsm": _tail_mean(log, "dsm"),
           "denoising_full_test": metrics.get("denoising")}
    if "classification" in metrics:
        row["clean_accuracy"] = metrics["classification"][0]["accuracy"]
        row["accuracy_sigma_0.2"] = metrics["classification"][1]["accuracy"]
    if "lam_final" in run.state:  # lam balanced by gradient norms (cdn.train.balanced_lam): the value it reached
        row["lam_final"] = run.state["lam_final"]
    grads = [r for r in log if "grad_ce" in r]
    if grads:
        row["grad_ce"], row["grad_dsm"] = grads[-1]["grad_ce"], grads[-1]["grad_dsm"]
    if config.objective in ("joint", "ce_noisy"):
        head = getattr(run.net, "head", None)
        row["energy_source"] = ENERGY_SOURCE.get(head)
        sub = data.test.subset(DENOISE_IMAGES)
        denoisers = decomposed_denoisers(run.model, data.test.num_classes)
        row["denoising"] = psnr_vs_sigma(denoisers, sub, SIGMAS, device=device)
        row["score_sizes"] = score_part_sizes(run.model, sub, SIGMAS, device=device)
        through = "D(y)" if head in FEATURE_ENERGY_HEADS else "features alone"
        row.update({f"network_psnr_{r['sigma']}": r[through] for r in row["denoising"]})
    return row


def _tail_mean(log: list[dict], key: str, last: int = 5) -> float | None:
    values = [r[key] for r in log if key in r][-last:]
    return sum(values) / len(values) if values else None


def choose(rows: list[dict], width: int | None = None) -> str | None:
    """The candidate the rule of the module docstring picks, or None when no joint candidate passes; with
    ``width``, among the candidates trained at that width only (the amended rule)."""
    def gain(r):
        den = {d["sigma"]: d for d in r.get("denoising", [])}
        return r["network_psnr_0.1"] - den[0.1]["noisy"] if 0.1 in den and "network_psnr_0.1" in r else -1e9

    passed = [r for r in rows if r["model"] != NOISY_CE and gain(r) >= NETWORK_GAIN_DB
              and (width is None or width_of(r) == width)]
    if not passed:
        return None
    best = max(r["clean_accuracy"] for r in passed)
    close = [r for r in passed if r["clean_accuracy"] >= best - 0.01]
    return max(close, key=lambda r: {d["sigma"]: d for d in r["denoising"]}[0.1]["D(y)"])["candidate"]


#: the first default, whose denoiser is one convolution of y: what every candidate is compared with
SHORTCUT = "default (3x3 log-energy)"
#: the model of the noise-augmentation baseline (cross-entropy alone on the joint model's noisy images)
NOISY_CE = "gradresnet-ce-noisy"


def width_of(row: dict) -> int:
    """The network width a row was trained at (its ``overrides``; the quick and cpu profiles' 16 otherwise)."""
    return int(row.get("overrides", {}).get("width", 16))


#: the settings a cross-entropy baseline must share with a joint row to be its reference: the images it sees
MATCHED_SETTINGS = ("ce_on", "sigma_distribution")


def noisy_ce_reference(row: dict, rows: list[dict]) -> dict | None:
    """The row of ``rows`` that trained the same network width on cross-entropy alone on the joint model's noisy
    images (``NOISY_CE``): the baseline that separates what score matching adds from noise augmentation. Among
    several, the one whose ``MATCHED_SETTINGS`` overrides equal the row's (the same images: clean ones too, the same
    sigma law)."""
    def settings(r):
        return {k: r.get("overrides", {}).get(k) for k in MATCHED_SETTINGS}

    same_width = [r for r in rows if r["model"] == NOISY_CE and width_of(r) == width_of(row)]
    return next((r for r in same_width if settings(r) == settings(row)), same_width[0] if same_width else None)


def search_comparisons(results: dict) -> list[dict]:
    """Per joint candidate of ``results`` other than the shortcut (``SHORTCUT``): ``candidate``, ``width``,
    ``accuracy_vs_shortcut`` and ``accuracy_vs_noisy_ce`` (differences of clean accuracy, in points, the second
    against ``noisy_ce_reference``; None when absent), ``psnr_vs_shortcut`` ({sigma: dB of D(y) minus the
    shortcut's}), ``stem_gain_0.1`` (dB of the stem's energy alone over the noisy input at sigma = 0.1, for
    feature-map energies) and ``grad_ratio`` (``|grad CE| / |grad lam DSM|`` at the last logged step)."""
    rows = results.get("rows", [])
    by_name = {r["candidate"]: r for r in rows}
    base = by_name.get(SHORTCUT)
    base_den = {d["sigma"]: d for d in base["denoising"]} if base else {}
    out = []
    for r in rows:
        if r is base or r["model"] == NOISY_CE or r.get("clean_accuracy") is None:
            continue
        den = {d["sigma"]: d for d in r.get("denoising", [])}
        ref = noisy_ce_reference(r, rows)
        out.append({
            "candidate": r["candidate"], "width": width_of(r),
            "accuracy_vs_shortcut": 100 * (r["clean_accuracy"] - base["clean_accuracy"]) if base else None,
            "accuracy_vs_noisy_ce": 100 * (r["clean_accuracy"] - ref["clean_accuracy"]) if ref else None,
            "psnr_vs_shortcut": {s: den[s]["D(y)"] - base_den[s]["D(y)"] for s in SIGMAS if s in den and s in base_den},
            "stem_gain_0.1": (den[0.1]["stem energy alone"] - den[0.1]["noisy"]
                              if 0.1 in den and "stem energy alone" in den[0.1] else None),
            "grad_ratio": r["grad_ce"] / r["grad_dsm"] if r.get("grad_ce") and r.get("grad_dsm") else None,
        })
    return out


#: the committed search (chapter 10)
#: the three results files, under the results folder (``cdn.committed.results_root``): the 3-epoch search, the
#: 10-epoch confirmation, the committed cpu-profile run measured as it is
RESULTS_FILE, CONFIRM_FILE, PROFILE_FILE = "joint-search.json", "joint-confirm.json", "joint-cpu.json"


def load(name: str | Path, results_dir: str | Path | None = None) -> dict:
    """The results file ``name`` (``{"meta", "rows", "chosen"}``) of the results folder (``results_dir``, else
    ``$CDN_RESULTS``, else ``results/``), or an empty one when it does not exist."""
    path = results_root(results_dir) / name
    return json.loads(path.read_text()) if path.is_file() else {"meta": {}, "rows": [], "chosen": None}


def table(results: dict):
    """One row per candidate: accuracy, the PSNR (dB) of ``D(y)`` at every sigma (on the whole test set where the
    row has it, ``denoising_full_test``, else on the decomposition's subset), of each part of the denoiser
    and of ``D(y, c)`` against ``D(y, wrong c)`` at sigma = 0.1, the two loss terms' gradient norms, and the lam a
    balanced candidate reached (``lam_final``)."""
    import pandas as pd

    out = {}
    for r in results.get("rows", []):
        den = {d["sigma"]: d for d in r.get("denoising", [])}
        full = {d["sigma"]: d for d in r.get("denoising_full_test") or []}
        row = {"width": width_of(r), "clean acc.": r.get("clean_accuracy"), "acc. σ=0.2": r.get("accuracy_sigma_0.2"),
               "epochs": r["epochs"]}
        for s in SIGMAS:
            row[f"D(y) σ={s:g}"] = full[s]["D(y)"] if s in full else den[s]["D(y)"] if s in den else None
        mid = den.get(0.1, {})
        row.update({"noisy σ=0.1": mid.get("noisy"), "energy alone σ=0.1": mid.get("energy alone"),
                    "features alone σ=0.1": mid.get("features alone"), "network part σ=0.1": r.get("network_psnr_0.1"),
                    "stem energy alone σ=0.1": mid.get("stem energy alone"),
                    "D(y,c) − D(y,wrong c) σ=0.1": (mid["D(y,c)"] - mid["D(y,wrong c)"]) if mid else None,
                    "|∇θ CE|": r.get("grad_ce"), "|∇θ λ DSM|": r.get("grad_dsm"), "λ reached": r.get("lam_final"),
                    "energy from": r.get("energy_source") or ""})
        out[r["candidate"]] = row
    return pd.DataFrame.from_dict(out, orient="index")


def meta_line(meta: dict) -> str:
    """Where a results file was measured, in one line: machine, commit, data file with its sha256, budget."""
    data = meta.get("data") or {}
    budget = {k: v for k, v in (meta.get("budget") or {}).items() if k in ("name", "profile", "steps", "precision")}
    return (f"machine: {meta.get('machine')} | commit: {meta.get('commit')} | data: {data.get('file')} "
            f"(sha256 {str(data.get('sha256'))[:12]}...)" + (f" | budget: {budget}" if budget else ""))


def full_test_psnr(row: dict) -> dict[float, float]:
    """sigma -> PSNR (dB) of a row's ``D(y)`` on the whole test set (``denoising_full_test``)."""
    return {d["sigma"]: d["D(y)"] for d in row.get("denoising_full_test") or []}


def _gaps(mine: dict, ref: dict) -> str:
    return ", ".join(f"σ={s:g}: {mine[s] - ref[s]:+.2f} dB" for s in SIGMAS)


def confirmation_report(confirm: dict, chosen: str | None = None, shortcut_metrics: dict | None = None) -> str:
    """Each joint candidate of the confirmation (``chosen`` first) read against its references, one block per
    candidate: ``D(y)`` minus the first default's plateau (``shortcut_metrics``, its cpu run's ``metrics.json``),
    minus the UNet's and the DnCNN's at the same epochs, the clean accuracy minus both cross-entropy GradResNets',
    what the first stage's blocks add over the stem's energy alone, ``D(y, c) - D(y, wrong c)``, the ratio of the two
    loss terms' parameter gradients and the final DSM loss."""
    rows = {r["candidate"]: r for r in confirm.get("rows", [])}
    joints = sorted((r for r in rows.values() if r.get("clean_accuracy") is not None and r.get("denoising_full_test")),
                    key=lambda r: r["candidate"] != chosen)
    blocks = []
    for joint in joints:
        mine = full_test_psnr(joint)
        lines = [f"{joint['candidate']} ({joint['epochs']:.0f} epochs, {joint['train_time_s'] / 60:.0f} min on "
                 f"{joint.get('machine', confirm.get('meta', {}).get('machine'))}):"]
        if shortcut_metrics is not None:
            plateau = {d["sigma"]: d["D(y)"] for d in shortcut_metrics["denoising"]}
            lines.append(f"  against the first, one-convolution default (the shortcut, cpu profile, "
                         f"{shortcut_metrics['epochs']:.1f} epochs, whose D(y) had stopped improving): " + _gaps(mine, plateau))
        for name, label in (("UNet (denoising only)", "the UNet at the same epochs"),
                            ("DnCNN (denoising only)", "the DnCNN at the same epochs")):
            if name in rows:
                lines.append(f"  against {label}: " + _gaps(mine, full_test_psnr(rows[name]))
                             + (f" (caution: {rows[name]['note']})" if rows[name].get("note") else ""))
        for name in ("cross-entropy on the same noisy images", "cross-entropy on clean and noisy images, log-normal sigma",
                     "cross-entropy on clean images"):
            if name in rows:
                ref = rows[name]["clean_accuracy"]
                lines.append(f"  clean accuracy against {name}: {100 * (joint['clean_accuracy'] - ref):+.2f} points "
                             f"({100 * joint['clean_accuracy']:.2f}% against {100 * ref:.2f}%)")
        sub = {d["sigma"]: d for d in joint["denoising"]}
        if all("stem energy alone" in sub[s] for s in SIGMAS):
            lines.append("  the blocks over the stem's energy alone: " + ", ".join(
                f"σ={s:g}: {sub[s]['D(y)'] - sub[s]['stem energy alone']:+.2f} dB" for s in SIGMAS))
        lines.append(f"  D(y, c) − D(y, wrong c) at σ=0.1: {sub[0.1]['D(y,c)'] - sub[0.1]['D(y,wrong c)']:+.3f} dB; "
                     f"|∇θ CE| / |∇θ λ DSM| at the last step: {joint['grad_ce'] / joint['grad_dsm']:.1f}; "
                     f"final DSM loss {joint['final_dsm']:.3f}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def markdown_table(results: dict) -> str:
    """A results file (``load``) as the README's Markdown table, one row per candidate in the file's order: width,
    clean accuracy and at sigma = 0.2, ``D(y)`` at every sigma (whole test set where the row has it, else the
    decomposition's sample), the network's part at 0.1, what the blocks add over the stem's energy alone at 0.1,
    ``D(y, c) - D(y, wrong c)`` at 0.1, ``|grad CE| / |grad lam DSM|`` at the last step, training minutes and the
    machine; the candidate the amended rule chooses (``results["chosen"]``) in bold, and the lam a balanced candidate
    reached beside its name; "–" where not measured."""
    import pandas as pd

    def num(v, fmt):
        return "–" if v is None or pd.isna(v) else format(v, fmt)

    head = ("| candidate | width | clean acc | acc σ=0.2 | D(y) σ=0.05 | σ=0.1 | σ=0.2 | network part σ=0.1 | "
            "blocks over stem σ=0.1 | D(y,c) − D(y,wrong c) σ=0.1 | ‖∇CE‖ / ‖∇λDSM‖ | training | machine |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r, (name, row) in zip(results.get("rows", []), table(results).iterrows()):
        stem, part = row["stem energy alone σ=0.1"], row["network part σ=0.1"]
        grads = f"{r['grad_ce']:.1f} / {r['grad_dsm']:.2f}" if r.get("grad_ce") and r.get("grad_dsm") else "–"
        label = name + (f" (λ reached {r['lam_final']:.3g})" if r.get("lam_final") else "")
        cells = [f"**{label}**" if name == results.get("chosen") else label, str(row["width"]),
                 num(row["clean acc."], ".1%"), num(row["acc. σ=0.2"], ".1%"),
                 *(num(row[f"D(y) σ={s:g}"], ".2f") for s in SIGMAS), num(part, ".2f"),
                 num(part - stem if stem is not None and part is not None else None, "+.2f"),
                 num(row["D(y,c) − D(y,wrong c) σ=0.1"], "+.3f"), grads,
                 f"{r['train_time_s'] / 60:.0f} min", (r.get("machine") or "not recorded").removeprefix("cpu (")
                 .removesuffix(")").replace("(R)", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cdn joint-search", description=__doc__.split("\n\n")[0])
    p.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=list(CANDIDATES), metavar="NAME")
    p.add_argument("--budget", choices=list(BUDGETS), default="search",
                   help="search: 3 epochs from the quick profile; confirm: 10 epochs with the cpu profile's recipe; "
                        "cpu: the cpu profile's own configuration (its committed run, measured as it is)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--data-dir", default=None)
    a = p.parse_args(argv)
    found = json.loads(a.out.read_text()) if a.out.is_file() else {}
    rows = {r["candidate"]: r for r in found.get("rows", [])}
    # the commit of the code that trains, read before training: a commit made while it runs is not its code
    commit, machine = git_commit(), device_description(torch.device("cpu"))
    for name in a.candidates:
        profile, budget = BUDGETS[a.budget]
        rows[name] = measure(name, a.data_dir, profile=profile, budget=budget)
        rows[name]["command"] = "python -m cdn joint-search " + shlex.join(argv or sys.argv[1:])
        rows[name]["commit"] = commit
        rows[name]["machine"] = machine  # rows of one file may come from several machines
        out = {"meta": {"command": "python -m cdn joint-search " + shlex.join(argv or sys.argv[1:]),
                        "commit": commit, "machine": machine,
                        "torch": torch.__version__, "data": data_record("cifar10", a.data_dir), "budget": {"name": a.budget, "profile": profile, **budget},
                        "rule": __doc__.split("\n\n")[2].replace("\n", " ")},
               "rows": list(rows.values())}
        out["chosen"] = choose(out["rows"], width=DEFAULT_WIDTH)
        out["chosen_first_rule"] = choose(out["rows"])
        atomic_write_text(a.out, json.dumps(out, indent=1))
        print(f"[cdn] {name}: clean {rows[name].get('clean_accuracy')}, network part at 0.1: "
              f"{rows[name].get('network_psnr_0.1')}", flush=True)
    return 0

