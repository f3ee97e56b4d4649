"""A GPU sprint: the paper-width joint GradResNet trained for a fixed number of seconds with the
short-budget recipe, evaluated on the whole test set, written as a committed run (the numbers of
chapter "Results" for the paper profile, until a full schedule has run).

    python -m cdn sprint --seconds 480 --out DIR [--data-dir PATH] [--set batch_size=256 ...]
    python -m cdn sprint --seconds 5 --out DIR --smoke          (tiny sizes on the CPU: CI, tests)

The recipe: learning rate warm-up then cosine decay over the training seconds (``time_budget_s``),
a moving average of the weights (``ema_decay``) that is the model evaluated and saved, test-time
flips for classification, bf16 autocast on a GPU (``precision='auto'``). The run trains under the
runs root (``$CDN_RUNS``; an interrupted sprint resumes with the seconds it had spent), then ``DIR``
receives it in the format of ``cdn.runs.export_run``: the weights in float16 split into files of at
most 16 MiB, ``config.json``, ``state.json``, ``log.jsonl``, ``metrics.json``, ``manifest.json``
(sha256 of each), and a ``RUN.md`` with the command, commit, device, images per second and wall
times. ``cdn.runs.load_run(DIR)`` loads it.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from ..checkpoint import atomic_write_text
from ..profiles import Config, get_config, parse_overrides
from ..provenance import device_description, git_commit
from ..runs import export_run, load_run, resolve_data, runs_root
from ..train import default_device, train

#: the recipe of a sprint, over the paper profile's width 64, batch 128 and learning rate
SPRINT_RECIPE = dict(ema_decay=0.999, tta_flip=True, precision="auto", steps=10_000_000, checkpoint_every=2000,
                     log_every=50)
#: the smoke sprint: tiny sizes, a few seconds on the CPU
SMOKE_RECIPE = dict(ema_decay=0.9, tta_flip=True, precision="auto", steps=100_000, width=4, train_size=256,
                    test_size=64, batch_size=32, warmup_steps=2, checkpoint_every=20, log_every=2)
MAX_FILE_MIB = 16


def portable_command(argv: list[str]) -> str:
    """``python -m cdn sprint ARGS`` for RUN.md, each absolute path replaced by its last component (a
    committed run holds no path of the machine that made it)."""
    args = [Path(a).name if Path(a).is_absolute() else a for a in argv]
    return "python -m cdn sprint " + " ".join(shlex.quote(a) for a in args)


def sprint_config(seconds: float, smoke: bool = False, dataset: str = "cifar10", **overrides) -> Config:
    """The configuration of a sprint of ``seconds`` of training: the paper profile's joint GradResNet
    with ``SPRINT_RECIPE`` (or the smoke profile's with ``SMOKE_RECIPE``) and ``overrides``."""
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    recipe = dict(SMOKE_RECIPE if smoke else SPRINT_RECIPE, time_budget_s=float(seconds))
    recipe.update(overrides)
    return get_config("smoke" if smoke else "paper", "gradresnet", dataset, **recipe)


def sprint(seconds: float, out: str | Path, data_dir=None, smoke: bool = False, dataset: str = "cifar10",
           device=None, runs=None, command: str | None = None, progress: bool = False, **overrides) -> dict:
    """Train the sprint of ``sprint_config(seconds, smoke, dataset, **overrides)``, evaluate it on the
    configuration's test set (the whole CIFAR-10 test set outside smoke) and write it into ``out``
    (module docstring). Returns the metrics."""

    config = sprint_config(seconds, smoke, dataset, **overrides)
    data = resolve_data(config, data_dir)
    config = data.config
    device = default_device() if device is None else device
    run_dir = runs_root(runs) / config.run_name()
    t0 = time.perf_counter()
    state = train(config, run_dir, data.train, device=device, progress=progress)
    if not state["finished"]:
        raise RuntimeError(f"the sprint in {run_dir} stopped at step {state['step']} before its budget was spent "
                           "(preempted?); run the same command again to resume it")
    t_train = time.perf_counter() - t0
    run = load_run(run_dir, device)
    metrics = run.metrics(data.test)
    t_eval = time.perf_counter() - t0 - t_train
    command = command or portable_command(sys.argv[1:])
    out = export_run(run_dir, out, data_dir, command=command, max_file_mib=MAX_FILE_MIB, overwrite=True,
                     run_md=False)
    log = run.log()
    ips = [r["images_per_s"] for r in log if "images_per_s" in r]
    den = {row["sigma"]: row.get("D(y)") for row in metrics.get("denoising") or []}
    weights = json.loads((out / "manifest.json").read_text())["weights"]
    lines = [
        f"# Sprint: {config.run_name()}", "",
        f"- command: `{command}`",
        f"- commit: {state.get('commit')}",
        f"- device: {device_description(device)} (torch {state.get('torch')}, precision {config.precision})",
        f"- data: {data.source.split(' (')[0]}, {len(data.train)} training and {len(data.test)} test images",
        f"- budget: {config.time_budget_s:g} s of training; trained {state['step']} steps of batch "
        f"{config.batch_size} ({state['epochs']} epochs) in {state['elapsed_s']:.1f} s",
        f"- images/s: {state['step'] * config.batch_size / max(state['elapsed_s'], 1e-9):.0f} overall, "
        f"{statistics.median(ips) if ips else float('nan'):.0f} median of the logged intervals",
        f"- wall time: {t_train:.1f} s this call's training (start-up included), {t_eval:.1f} s evaluation",
        f"- clean accuracy (test-time flips {'on' if config.tta_flip else 'off'}): "
        f"{metrics.get('clean_accuracy') or float('nan'):.4f}",
        "- PSNR of D(y), dB: " + ", ".join(f"σ={s:g} {v:.2f}" for s, v in den.items() if v is not None),
        f"- weights: {', '.join(weights)} (float16, at most {MAX_FILE_MIB} MiB each), EMA decay {config.ema_decay}",
        f"- written: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load with "
        "`cdn.runs.load_run(<this folder>)`", "",
    ]
    atomic_write_text(out / "RUN.md", "\n".join(lines))
    if git_commit().startswith("unknown"):
        print("[cdn] note: not a git checkout, RUN.md's commit is unknown")
    return metrics


def main(argv: list[str] | None = None) -> int:
    """``python -m cdn sprint``: parse the arguments and run ``sprint``."""

    p = argparse.ArgumentParser(prog="python -m cdn sprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, required=True, help="training seconds (the schedule's budget)")
    p.add_argument("--out", required=True, help="folder that receives the run (weights, metrics, log, RUN.md)")
    p.add_argument("--data-dir", default=None, help="folder or .tar.gz holding the data")
    p.add_argument("--dataset", default="cifar10", help="cifar10 (default), or synthetic for a smoke test")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (width 4, 256 images): a few seconds on the CPU")
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--runs", default=None, help="root of the run directories (default $CDN_RUNS or ./runs)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override configuration fields, e.g. batch_size=256")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    try:
        metrics = sprint(args.seconds, args.out, args.data_dir, args.smoke, args.dataset, args.device, args.runs,
                         command=portable_command(argv), progress=args.progress, **parse_overrides(args.set))
    except (ValueError, FileNotFoundError) as err:
        print(f"cdn.experiments.gpu_sprint: error: {err}", file=sys.stderr)
        return 2
    print(f"[cdn] sprint written to {args.out}: clean accuracy {metrics.get('clean_accuracy')}")
    return 0

