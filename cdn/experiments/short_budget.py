"""What two choices of the training recipe are worth, measured on finished runs (chapter "Training the
joint model", the ``cpu`` profile).

A run trained with ``ema_decay`` keeps two sets of weights in its last training checkpoint: the
weights the optimiser reached (``model/*``) and their exponential moving average (``ema/*``,
``theta_ema <- d theta_ema + (1 - d) theta``, which ``model.safetensors`` holds). Test-time flips
(``tta_flip``) average ``log p(c | y)`` over the image and its mirror image. Both act after training,
so each is measured on the same run, on the same test images, by switching it off:

* clean accuracy of {last weights, moving average} x {no flip, flip};
* PSNR of the denoiser (``D(y)`` of a joint model, the network of a denoise-only model) at sigma, for
  the last weights and the moving average.

``python -m cdn short-budget --profile cpu --models gradresnet gradresnet-ce ...`` measures the runs of the
profile under the runs root and writes ``results/<profile>-<dataset>/recipe.json`` with the command,
commit, machine and the data by name and sha256. The learning-rate schedule over the time budget is
not measured here: that needs a second training per model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text, latest_training_checkpoint, load_model_state
from ..evaluate import DENOISE_SIGMAS, classification_vs_sigma, psnr_vs_sigma
from ..joint import JointModel
from ..profiles import get_config, model_label
from ..provenance import data_record, device_description, git_commit
from ..committed import results_root
from ..runs import load_run, resolve_data, runs_root


def last_and_average(run_dir: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The two weight sets of a run's newest good training checkpoint: ``{"last": model/*,
    "moving average": ema/*}``. Raises ``FileNotFoundError`` when the run has no checkpoint and
    ``ValueError`` when it was trained without ``ema_decay`` (no ``ema/*`` tensors)."""
    found = latest_training_checkpoint(Path(run_dir) / "ckpt")
    if found is None:
        raise FileNotFoundError(f"{run_dir} has no training checkpoint (ckpt/step-*.safetensors)")
    tensors, _ = found
    last = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    ema = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
    if not ema:
        raise ValueError(f"the checkpoint of {run_dir} has no moving average (ema/*): the run was trained "
                         "without ema_decay, so there is nothing to compare")
    return {"last": last, "moving average": ema}


def recipe_worth(run_dir: str | Path, test_set, sigma: float = 0.1, seed: int = 0) -> dict:
    """Clean accuracy of the last weights and of their moving average, each without and with test-time
    flips, and the PSNR (dB) of the denoiser at ``sigma`` for both weight sets, on ``test_set`` (the
    same noise for every row and as the run's ``metrics.json``: ``seed``). Returns ``{"run", "model", "objective", "steps", "rows": [...]}``
    with one row per weight set."""
    run = load_run(run_dir, "cpu")
    net, objective = run.net, run.config.objective
    rows = []
    for name, weights in last_and_average(run_dir).items():
        load_model_state(net, weights, f"the {name} weights of {run_dir}")
        net.eval()
        model = JointModel(net)
        row: dict = {"weights": name}
        if objective != "mse":
            for flip in (False, True):
                acc = classification_vs_sigma(model, test_set, (0.0,), seed=seed, device="cpu", tta_flip=flip)
                row["clean accuracy, flip" if flip else "clean accuracy"] = acc[0]["accuracy"]
        if objective in ("joint", "mse"):
            den = {"D": (lambda y, s, c: net(y)) if objective == "mse" else (lambda y, s, c: model.denoise(y, s))}
            # the noise of psnr_vs_sigma depends on the sigma's index: evaluate the run's sigmas up to this
            # one, so that the moving average's row is the run's own metrics.json
            sigmas = DENOISE_SIGMAS[:DENOISE_SIGMAS.index(sigma) + 1] if sigma in DENOISE_SIGMAS else (sigma,)
            out = psnr_vs_sigma(den, test_set, sigmas, seed=seed, device="cpu")[-1]
            row[f"PSNR σ={sigma:g} (dB)"] = out["D"]
            row[f"PSNR noisy σ={sigma:g} (dB)"] = out["noisy"]
        rows.append(row)
    return {"run": run.name, "model": run.config.model, "objective": objective, "steps": run.state.get("step"),
            "test_images": len(test_set), "rows": rows}


def measure(profile: str, models, dataset: str = "cifar10", data_dir=None, out: str | Path | None = None,
            sigma: float = 0.1) -> Path:
    """``recipe_worth`` of each of ``models``' finished runs of ``profile`` under the runs root, written
    with its provenance (command, commit, machine, the data by name and sha256) to ``out`` (default
    ``results/<profile>-<dataset>/recipe.json``). Raises ``FileNotFoundError`` for a model whose run is
    not trained."""

    out = Path(out) if out is not None else results_root() / f"{profile}-{dataset}" / "recipe.json"
    entries, test = [], None
    for model in models:
        config = get_config(profile, model, dataset)
        run_dir = runs_root() / config.run_name()
        if not (run_dir / "state.json").is_file():
            raise FileNotFoundError(f"{model}: no finished run {run_dir}; train it first "
                                    f"(python -m cdn train --profile {profile} --model {model} --dataset {dataset})")
        if test is None:
            test = resolve_data(config, data_dir).test
        entries.append(recipe_worth(run_dir, test, sigma))
    record = {"profile": profile, "dataset": dataset, "sigma": sigma, "data": data_record(dataset, data_dir),
              "command": f"python -m cdn short-budget --profile {profile} --dataset {dataset} --models {' '.join(models)}"
                         + (f" --sigma {sigma:g}" if sigma != 0.1 else ""),
              "commit": git_commit(), "machine": device_description("cpu"), "runs": entries}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1))
    return out


def table(record: dict):
    """A pandas DataFrame of a ``measure`` record: one row per model and weight set."""
    import pandas as pd


    rows = [{"model": model_label(e["model"]), **r} for e in record["runs"] for r in e["rows"]]
    return pd.DataFrame(rows).set_index(["model", "weights"])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m cdn short-budget", description=__doc__.split("\n\n")[0])
    p.add_argument("--profile", default="cpu")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--sigma", type=float, default=0.1)
    args = p.parse_args(argv)
    path = measure(args.profile, args.models, args.dataset, args.data_dir, args.out, args.sigma)
    print(table(json.loads(path.read_text())).to_string())
    print(f"[cdn] wrote {path}")
    return 0

