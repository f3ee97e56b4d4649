"""The command line ``cdn``: train, eval, denoise, classify, book, bench.

    cdn train --profile quick --model gradresnet [--dataset cifar10] [--set lam=0.5] [--dry-run] [--retrain]
    torchrun --nproc_per_node=N -m cdn train ...        (data-parallel; see cdn/distributed.py)
    cdn eval RUN_DIR
    cdn denoise IMAGE --run RUN_DIR --sigma 0.1 [--class 3] [--out DIR]
    cdn classify IMAGE --run RUN_DIR [--sigma 0]
    cdn export RUN_DIR [--to results/<profile>-<dataset>/<model>] [--max-file-mib 16] [--force]
    cdn book --profile quick [--chapter NAME ...] [--edition full|student] [--retrain]
    cdn claims [--readme]
    cdn bench
    cdn joint-search | variants | short-budget | sprint ARGS   (the experiments of cdn.experiments; --help each)
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

MAX_IMAGE_SIDE = 4096
#: subcommand -> (module of cdn.experiments whose ``main(argv)`` it runs, help)
EXPERIMENT_COMMANDS = {
    "joint-search": ("joint_search", "train and measure the joint-model candidates (chapter 10, results/joint-*.json)"),
    "variants": ("variants", "the GradResNet variants compared at one probe budget (results/architecture-quick.json)"),
    "short-budget": ("short_budget", "what each part of the short-budget recipe gives (EMA, flips; chapter 01)"),
    "sprint": ("gpu_sprint", "a GPU sprint of N seconds written as a committed run (results/paper-cifar10/)"),
    "robustness": ("robustness", "attack a profile's committed models as chapter 11 does (results/robustness-*.json)"),
}


def cmd_train(args) -> int:
    import dataclasses

    from .profiles import get_config, parse_overrides
    from .committed import find_committed
    from .runs import load_run, resolve_data, runs_root

    overrides = parse_overrides(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    config = get_config(args.profile, args.model, args.dataset, **overrides)
    if args.dry_run:
        print(json.dumps(config.to_dict(), indent=1))
        print(f"run directory: {runs_root(args.runs) / config.run_name()}")
        return 0
    from . import distributed as D

    device = args.device
    info = D.DistInfo()
    distributed = args.distributed or D.launched_by_torchrun()
    if distributed:
        info, device = D.init(args.device)
    try:
        data = resolve_data(config, args.data_dir)
        if data.config.dataset != config.dataset:  # the data fell back (e.g. to digits): key the run by it
            config = dataclasses.replace(config, dataset=data.config.dataset)
        if info.is_main:
            print(f"[cdn] data: {data.source} ({len(data.train)} train, {len(data.test)} test)"
                  + (f"; {info.world_size} processes" if info.enabled else ""))
        run_dir = runs_root(args.runs) / config.run_name()
        state_path = run_dir / "state.json"
        committed = None if args.retrain else find_committed(config)
        if committed is not None:
            run_dir = committed
            if info.is_main:
                print(f"[cdn] using the committed run {committed} (sha256 checked); --retrain trains anyway")
        elif not (state_path.exists() and json.loads(state_path.read_text()).get("finished")):
            from .train import train

            state = train(config, run_dir, data.train, device=device, progress=not args.no_progress)
            if state.get("preempted"):
                if info.is_main:
                    print(f"[cdn] preempted at step {state['step']}; the same command resumes {run_dir}")
                return 0
        if info.is_main:
            print(f"[cdn] run: {run_dir}")
        D.barrier(info)  # rank 0 has written the final weights before any rank loads them
        if not args.no_eval:  # every rank evaluates its share of the test batches; rank 0 prints and writes
            shadow = runs_root(args.runs) / "committed" / config.run_name() if committed is not None else None
            metrics = load_run(run_dir, device, metrics_dir=shadow, verify=False).metrics(data.test)
            if info.is_main:
                _print_metrics(metrics)
        return 0
    finally:
        if distributed:
            D.cleanup()


def _print_metrics(m: dict) -> None:
    print(f"[cdn] {m['run']}: {m.get('steps')} steps, {m.get('epochs')} epochs, {m.get('train_time_s')} s")
    for row in m.get("classification", []):
        print(f"  sigma={row['sigma']:<5} accuracy={row['accuracy']:.4f} nll={row['nll']:.3f} ece={row['ece']:.3f}")
    for row in m.get("denoising", []):
        psnrs = " ".join(f"{k}={v:.2f}" for k, v in row.items() if k != "sigma")
        print(f"  sigma={row['sigma']:<5} PSNR dB: {psnrs}")


def cmd_eval(args) -> int:
    from .runs import load_run, resolve_data

    run = load_run(args.run, args.device)
    data = resolve_data(run.config, args.data_dir)
    _print_metrics(run.metrics(data.test))
    print(f"[cdn] metrics in {(run.metrics_dir or run.dir) / 'metrics.json'}")
    return 0


def load_image(path: str | Path, in_channels: int, size: int | None):
    """Read an image file as a (1, C, size, size) float tensor in [0, 1] (``size`` None: at its own
    resolution, (1, C, H, W)); clear errors for files that are not images, have absurd sizes, or cannot
    be matched to the model's channels."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IMAGE {str(path)!r} does not exist")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as err:
        raise ValueError(f"IMAGE {str(path)!r} is not an image file PIL can read: {err}") from err
    if max(img.size) > MAX_IMAGE_SIDE or min(img.size) < 1:
        raise ValueError(f"IMAGE {str(path)!r} has size {img.size}; expected sides between 1 and {MAX_IMAGE_SIDE}")
    if img.mode.startswith("I"):  # 16- or 32-bit integer greys: scale by the bit depth, not by clipping
        arr = np.asarray(img, dtype=np.float32)
        arr = arr / (65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0)
    elif img.mode == "F":  # float greys, taken to be on the [0, 1] scale
        arr = np.asarray(img, dtype=np.float32)
    else:
        arr = np.asarray(img.convert("L" if in_channels == 1 else "RGB"), dtype=np.float32) / 255
    arr = np.clip(arr, 0, 1)
    t = torch.from_numpy(np.ascontiguousarray(arr))
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    if t.shape[0] == 1 and in_channels == 3:
        t = t.expand(3, -1, -1)
    elif t.shape[0] == 3 and in_channels == 1:
        t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2])[None]
    if size is None:
        return t[None].float().clamp(0, 1).contiguous()
    t = torch.nn.functional.interpolate(t[None].float(), size=(size, size), mode="bicubic", antialias=True,
                                        align_corners=False)
    return t.clamp(0, 1).contiguous()


#: patches denoised per batch by ``denoise_tiled``
TILE_BATCH = 64


def denoise_tiled(denoise, y, size: int):
    """``denoise`` (a map of (N, C, size, size) batches) applied to a (1, C, H, W) image of any size: the
    image is padded at its bottom and right edges by replication to multiples of ``size``, cut into
    ``size`` x ``size`` patches (``cdn.data.tile``), denoised ``TILE_BATCH`` patches at a time, put back
    together and cropped to H x W (the models are trained on ``size`` x ``size`` images)."""
    import torch

    from .data import tile, untile

    h, w = y.shape[-2:]
    ph, pw = -h % size, -w % size
    padded = torch.nn.functional.pad(y, (0, pw, 0, ph), mode="replicate") if ph or pw else y
    patches = tile(padded[0], size)
    out = torch.cat([denoise(patches[i:i + TILE_BATCH]).detach() for i in range(0, len(patches), TILE_BATCH)])
    return untile(out, h + ph, w + pw)[None, :, :h, :w]


def _save_png(t, path: Path) -> None:
    from PIL import Image

    arr = (t[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)


def cmd_denoise(args) -> int:
    import torch

    from .runs import load_run

    if args.sigma < 0:
        raise ValueError(f"--sigma must be >= 0, got {args.sigma}")
    run = load_run(args.run, args.device)
    if run.config.objective not in ("joint", "mse", "dsm_conditional"):
        raise ValueError(f"run {run.name} is a classifier ({run.config.model}); denoise needs a joint or UNet run")
    x = load_image(args.image, run.state["in_channels"], None).to(next(run.net.parameters()).device)
    g = torch.Generator().manual_seed(args.seed)
    y = x + args.sigma * torch.randn(x.shape, generator=g).to(x.device)
    if run.config.objective == "mse":
        def denoise(patches):
            with torch.no_grad():
                return run.net(patches)
    else:
        c = None
        if args.cls is not None:
            classes = run.state["classes"]
            if not 0 <= args.cls < len(classes):
                raise ValueError(f"--class must be in [0, {len(classes) - 1}], got {args.cls}")
            c = args.cls

        def denoise(patches):
            cls = None if c is None else torch.full((len(patches),), c, dtype=torch.long, device=patches.device)
            return run.model.denoise(patches, args.sigma, cls)
    d = denoise_tiled(denoise, y, run.state["image_size"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = Path(args.image).stem
    _save_png(y, out / f"{stem}-noisy-{args.sigma}.png")
    _save_png(d, out / f"{stem}-denoised-{args.sigma}.png")
    print(f"[cdn] wrote {out / f'{stem}-noisy-{args.sigma}.png'} and {out / f'{stem}-denoised-{args.sigma}.png'}")
    return 0


def cmd_classify(args) -> int:
    from .runs import load_run

    run = load_run(args.run, args.device)
    if run.config.objective == "mse":
        raise ValueError(f"run {run.name} is a denoiser (UNet); classify needs a classifier or joint run")
    x = load_image(args.image, run.state["in_channels"], run.state["image_size"]).to(next(run.net.parameters()).device)
    logp = run.model.classify(x, args.sigma)[0].exp()
    classes = run.state["classes"]
    for i in logp.argsort(descending=True)[: args.top].tolist():
        print(f"{classes[i]:<20} {logp[i].item():.4f}")
    return 0


def cmd_export(args) -> int:
    from .runs import export_run

    dest = export_run(args.run, args.to, args.data_dir, args.command, args.max_file_mib, overwrite=args.force)
    print(f"[cdn] committed run written to {dest} (and {dest.parent / 'RUN.md'}); add both to git")
    return 0


def cmd_book(args) -> int:
    import os

    from .book.build import build_book

    old = os.environ.get("CDN_RETRAIN")
    if args.retrain:  # read by cdn.runs.get_or_train in every chapter's kernel (it inherits the environment)
        os.environ["CDN_RETRAIN"] = "1"
    try:
        path = build_book(args.profile, args.chapter, args.data_dir, args.seed, build_dir=args.build_dir,
                          edition=args.edition, jobs=args.jobs)
    finally:
        if old is None:
            os.environ.pop("CDN_RETRAIN", None)
        else:
            os.environ["CDN_RETRAIN"] = old
    print(f"[cdn] book: {path}")
    return 0


def cmd_claims(args) -> int:
    from .book.claims import markdown, write_readme
    from .data import REPO_ROOT

    if args.readme:
        changed = write_readme(REPO_ROOT / "README.md")
        print(f"README.md: the claims ledger and the cpu table {'rewritten' if changed else 'were already up to date'}")
    else:
        print(markdown(), end="")
    return 0


def cmd_experiment(args) -> int:
    """Run the experiment module of ``EXPERIMENT_COMMANDS`` named by the subcommand with the remaining arguments."""
    module = importlib.import_module(f".experiments.{EXPERIMENT_COMMANDS[args.command][0]}", __package__)
    return module.main(args.rest) or 0


def cmd_bench(args) -> int:
    import runpy

    sys.argv = ["benchmarks"] + args.rest
    runpy.run_module("benchmarks", run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .profiles import MODELS, PROFILES

    p = argparse.ArgumentParser(prog="cdn", description="Classification-denoising networks: train, evaluate, "
                                "denoise, classify, build the book.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model in a profile (reuses a finished run of the same config)")
    t.add_argument("--profile", default="quick", choices=PROFILES, help="smoke (seconds), quick (minutes on CPU), "
                   "cpu (hours on CPU, committed), paper (GPU hours)")
    t.add_argument("--model", default="gradresnet", choices=list(MODELS), help="gradresnet is the joint model; the others are baselines and ablations")
    t.add_argument("--dataset", default="cifar10", choices=DATASETS, help="training data (default cifar10)")
    t.add_argument("--data-dir", default=None, help="folder or .tar.gz holding the data (default: $CDN_DATA, then ../shared/data)")
    t.add_argument("--runs", default=None, help="root of the run directories (default: $CDN_RUNS or ./runs)")
    t.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="override configuration fields, e.g. --set lam=0.5 steps=100")
    t.add_argument("--seed", type=int, default=None, help="random seed (default: the profile's, 0)")
    t.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--dry-run", action="store_true", help="print the resolved configuration and run directory, train nothing")
    t.add_argument("--no-eval", action="store_true", help="train only; skip the metrics on the test set")
    t.add_argument("--retrain", action="store_true", help="ignore a committed run of the same configuration "
                   "(results/<profile>-<dataset>/<model>/) and train (or reuse) it under the runs root")
    t.add_argument("--distributed", action="store_true", help="data-parallel over torch.distributed from the "
                   "launcher's RANK/WORLD_SIZE/LOCAL_RANK (implied under torchrun); see cdn/distributed.py")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a finished run on its test set; writes metrics.json")
    e.add_argument("run", help="a run directory (runs/<name>-<hash>)")
    e.add_argument("--data-dir", default=None, help="folder or .tar.gz holding the data")
    e.add_argument("--device", default=None, help="cpu or cuda")
    e.set_defaults(func=cmd_eval)

    d = sub.add_parser("denoise", help="add noise of level sigma to an image and denoise it; writes two PNGs")
    d.add_argument("image", help="an image file (PNG, JPEG), denoised at its own resolution in patches of the "
                                 "model's image size")
    d.add_argument("--run", required=True, help="a finished joint (gradresnet) or unet run directory")
    d.add_argument("--sigma", type=float, required=True, help="noise standard deviation on the [0, 1] pixel scale")
    d.add_argument("--class", dest="cls", type=int, default=None, help="class index for the conditional denoiser D(y, c)")
    d.add_argument("--out", default=".", help="output folder (default: current folder)")
    d.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    d.add_argument("--device", default=None, help="cpu or cuda")
    d.set_defaults(func=cmd_denoise)

    c = sub.add_parser("classify", help="print the most probable classes of an image")
    c.add_argument("image", help="an image file (PNG, JPEG); resized to the model's image size")
    c.add_argument("--run", required=True, help="a finished classifier or joint run directory")
    c.add_argument("--sigma", type=float, default=0.0, help="noise level of the image, for noise-conditioned models")
    c.add_argument("--top", type=int, default=5, help="how many classes to print")
    c.add_argument("--device", default=None, help="cpu or cuda")
    c.set_defaults(func=cmd_classify)

    x = sub.add_parser("export", help="write a finished run as a committed run (float16 weights, sha256 manifest, "
                       "RUN.md) that cdn reuses instead of training")
    x.add_argument("run", help="a finished run directory (runs/<name>-<hash>)")
    x.add_argument("--to", default=None, help="destination folder (default results/<profile>-<dataset>/<model>, or <model>-<hash> for a configuration other than the profile's own, cdn.committed.committed_dir)")
    x.add_argument("--data-dir", default=None, help="folder holding the data (its file is recorded by name and sha256)")
    x.add_argument("--command", default=None, help="the command that trained the run, for RUN.md (default: the "
                   "cdn train command of its configuration)")
    x.add_argument("--max-file-mib", type=float, default=None, help="split the weights into files of at most this "
                   "many MiB")
    x.add_argument("--force", action="store_true", help="replace an existing destination")
    x.set_defaults(func=cmd_export)

    b = sub.add_parser("book", help="execute the chapters with papermill and build the HTML book")
    b.add_argument("--profile", default="quick", choices=PROFILES, help="profile the chapters run in")
    b.add_argument("--chapter", nargs="*", default=None, help="rerun only these chapters (by name)")
    b.add_argument("--data-dir", default=None, help="folder holding the data")
    b.add_argument("--seed", type=int, default=0, help="seed passed to every chapter")
    b.add_argument("--build-dir", default=None, help="where executed chapters and HTML go (default book/_build)")
    b.add_argument("--edition", default="full", help="full (default: every solution, hidden behind a toggle) or "
                   "student (no solution; HTML in <build-dir>/html-student, from the executed chapters when fresh)")
    b.add_argument("--retrain", action="store_true", help="ignore committed runs (results/): the chapters train "
                   "(or reuse from the runs root) every model they need")
    b.add_argument("--jobs", type=int, default=1, help="chapters executed at once, one process and one thread "
                   "each (default 1: one at a time with every thread)")
    b.set_defaults(func=cmd_book)

    cl = sub.add_parser("claims", help="the claims ledger: each claim of the paper, the committed evidence and a verdict")
    cl.add_argument("--readme", action="store_true", help="rewrite the ledger in README.md instead of printing it")
    cl.set_defaults(func=cmd_claims)

    # bench and the experiment commands are listed here for --help; main() hands their arguments over itself
    be = sub.add_parser("bench", help="speed and memory benchmarks (see benchmarks/)")
    be.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmarks")
    be.set_defaults(func=cmd_bench)

    for name, (_, text) in EXPERIMENT_COMMANDS.items():
        ex = sub.add_parser(name, help=text, add_help=False)
        ex.add_argument("rest", nargs=argparse.REMAINDER, help=f"arguments of cdn {name} (--help lists them)")
        ex.set_defaults(func=cmd_experiment)
    return p


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="[cdn] %(message)s")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in (*EXPERIMENT_COMMANDS, "bench"):
        # handed over whole: argparse's REMAINDER does not take arguments that start with "--"
        args = argparse.Namespace(command=argv[0], rest=argv[1:],
                                  func=cmd_bench if argv[0] == "bench" else cmd_experiment)
    else:
        args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"cdn {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
