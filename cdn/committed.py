"""The committed-run store: finished runs written under ``results/<profile>-<dataset>/`` with float16 weights,
a ``manifest.json`` holding every file's sha256 and the provenance of the run, and a ``RUN.md`` per profile folder.
``find_committed`` finds the committed run of a configuration (its recorded name, hash included, must match) and
``verify_committed`` checks its files before any use; ``write_committed`` assembles one atomically. Nothing here
loads a network: ``cdn.runs`` loads, trains and exports through this module."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from . import data as data_mod
from .checkpoint import CheckpointError, atomic_write_text, save_weights, sha256_file
from .profiles import Config, get_config


MANIFEST = "manifest.json"


MANIFEST_FORMAT = "cdn-committed-run-1"


#: the files of a committed run besides its weights
COMMITTED_FILES = ("config.json", "state.json", "log.jsonl", "metrics.json")


def results_root(results: str | Path | None = None) -> Path:
    """Where committed runs live: ``results``, else ``$CDN_RESULTS``, else ``results/`` in the repository."""
    return data_mod.repo_folder(results, "CDN_RESULTS", "results")


def retrain_requested() -> bool:
    """Whether ``$CDN_RETRAIN`` asks to ignore committed runs (set by ``cdn book --retrain`` for the
    chapters it executes)."""
    return os.environ.get("CDN_RETRAIN", "").strip().lower() in ("1", "true", "yes")


def committed_dir(config: Config, results: str | Path | None = None) -> Path:
    """Where the committed run of ``config`` lives: ``results/<profile>-<dataset>/<model>/`` for the
    profile's own configuration of the model (``get_config(profile, model, dataset)``), and
    ``results/<profile>-<dataset>/<model>-<hash>/`` (``Config.key``) for any other, such as an exercise's
    or an ablation's shortened schedule."""
    folder = results_root(results) / f"{config.profile}-{config.dataset}"
    try:
        default = get_config(config.profile, config.model, config.dataset) == config
    except ValueError:  # a dataset the profile has no settings for (a fallback)
        default = False
    return folder / (config.model if default else f"{config.model}-{config.key()}")


def verify_committed(run_dir: str | Path) -> dict:
    """Check every file of a committed run against the sha256 its ``manifest.json`` records and return
    the manifest. Raises ``FileNotFoundError`` for a missing manifest or file and ``CheckpointError``
    for a file whose bytes changed (restore it, e.g. ``git checkout -- <file>``, or retrain with
    ``--retrain``)."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a committed run: {MANIFEST} is missing")
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is not a valid manifest (expected JSON with 'files': {{name: sha256}}): "
                              f"{err}") from err
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CheckpointError(f"{path} has format {manifest.get('format')!r}; expected {MANIFEST_FORMAT!r}")
    for name, digest in files.items():
        f = run_dir / name
        if "/" in name or "\\" in name or name.startswith("."):
            raise CheckpointError(f"{path} names a file outside the run folder: {name!r}")
        if not f.is_file():
            raise FileNotFoundError(f"committed run {run_dir}: {name} is missing (its manifest lists it)")
        actual = sha256_file(f)
        if actual != digest:
            raise CheckpointError(
                f"committed run {run_dir}: {name} is corrupted or was changed (sha256 {actual[:16]}..., the "
                f"manifest says {digest[:16]}...). Restore it (git checkout -- {f}) or train anew with --retrain.")
    return manifest


def find_committed(config: Config, results: str | Path | None = None) -> Path | None:
    """The committed run of ``config`` (``committed_dir``) when its recorded name, hash included, is
    ``config.run_name()``, after ``verify_committed``; None when there is none or it is another
    configuration's (e.g. one trained before a ``CODE_VERSION`` bump)."""
    run_dir = committed_dir(config, results)
    path = run_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text()).get("run")
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err
    if recorded != config.run_name():
        print(f"[cdn] {run_dir} holds {recorded}, not {config.run_name()} (another configuration or code "
              "version): not used")
        return None
    verify_committed(run_dir)
    saved = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    if saved != config:
        raise CheckpointError(f"committed run {run_dir} is recorded as {recorded} but its config.json is another "
                              "configuration")
    return run_dir


def precision_note(state: dict, committed: Path | None) -> str | None:
    """A sentence when a run and the committed run of the same name trained in different precisions
    (``state.json``'s ``autocast``, 'bf16' or 'float32'; ``precision='auto'`` picks by the machine, so the
    same configuration hash can name both): their numbers then differ by more than rounding of one
    precision. None when they agree, when there is no committed run, or when either record is missing."""
    if committed is None:
        return None
    theirs = json.loads((Path(committed) / "state.json").read_text()).get("autocast")
    ours = state.get("autocast")
    if theirs is None or ours is None or theirs == ours:
        return None
    return (f"run {state.get('run')} trained in {ours}, the committed run of the same configuration "
            f"({Path(committed).name}) in {theirs}: precision='auto' chose by the machine; set precision to "
            f"{theirs!r} to train it as it was committed (another run name)")


def train_command(config: Config) -> str:
    """The ``cdn train`` command that trains ``config``: its profile, model and dataset, and a
    ``--set`` for every field that differs from the profile's (written into RUN.md)."""
    base = get_config(config.profile, config.model, config.dataset)
    diff = {k: v for k, v in config.to_dict().items() if getattr(base, k) != v}
    seed = diff.pop("seed", None)
    cmd = f"cdn train --profile {config.profile} --model {config.model} --dataset {config.dataset}"
    if seed is not None:
        cmd += f" --seed {seed}"
    if diff:
        cmd += " --set " + " ".join(f"{k}={json.dumps(v)}" for k, v in sorted(diff.items()))
    return cmd


def check_portable(folder: str | Path, paths) -> None:
    """Raise ``ValueError`` when a text file of ``folder`` (JSON, JSON lines, Markdown) contains one of
    the absolute ``paths`` (of this machine): committed files name data by file name and sha256 only."""
    needles = sorted({str(Path(p).expanduser().resolve()) for p in paths} | {str(Path(p)) for p in paths}, key=len,
                     reverse=True)
    needles = [n for n in needles if len(n) > 1]
    for f in sorted(Path(folder).iterdir()):
        if f.suffix in (".json", ".jsonl", ".md"):
            text = f.read_text()
            hit = next((n for n in needles if n in text), None)
            if hit is not None:
                raise ValueError(f"{f.name} would commit the absolute path {hit!r} of this machine")


def _duration(seconds) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def write_run_md(profile_dir: str | Path) -> Path:
    """(Re)write ``RUN.md`` of a profile folder of committed runs (``results/<profile>-<dataset>/``) from
    the manifests of its model folders: per model, the command, commit, machine, precision trained in, wall time, steps,
    epochs and clean accuracy."""
    profile_dir = Path(profile_dir)
    rows = []
    for manifest_path in sorted(profile_dir.glob(f"*/{MANIFEST}")):
        m = json.loads(manifest_path.read_text())
        p = m.get("provenance", {})
        metrics_path = manifest_path.parent / "metrics.json"
        acc = json.loads(metrics_path.read_text()).get("clean_accuracy") if metrics_path.is_file() else None
        wall = p.get("wall_time_s")
        state_path = manifest_path.parent / "state.json"  # runs exported before the manifest recorded it
        precision = p.get("precision") or (json.loads(state_path.read_text()).get("autocast")
                                           if state_path.is_file() else None)
        rows.append(f"| {manifest_path.parent.name} | `{m.get('run')}` | `{p.get('command')}` | {p.get('commit')} | "
                    f"{p.get('machine')} | {precision or ''} | {_duration(wall)} | {p.get('steps')} | "
                    f"{p.get('epochs')} | {'' if acc is None else f'{100 * acc:.2f}%'} |")
    text = (f"# Committed runs: {profile_dir.name}\n\n"
            "Finished runs that `cdn.runs.get_or_train` reuses when the configuration hash matches (the run "
            "name). Every file is checked against the sha256 in its folder's `manifest.json` before use; "
            "`cdn train --retrain` or `cdn book --retrain` train anyway. Written by `cdn export` "
            "(`cdn.runs.export_run`); weights in float16.\n\n"
            "| model | run | command | commit | machine | precision | wall time | steps | epochs | clean accuracy |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n")
    atomic_write_text(profile_dir / "RUN.md", text)
    return profile_dir / "RUN.md"


def write_committed(dest: str | Path, config: Config, state: dict, metrics: dict, log: list[dict], weights: dict,
                    command: str | None = None, max_file_mib: float | None = None, overwrite: bool = False,
                    machine_paths=()) -> Path:
    """Write one committed run into ``dest`` and return it: ``config.json``, ``state.json``, ``metrics.json`` and
    ``log.jsonl`` as given (paths of this machine already removed: ``check_portable`` refuses any of
    ``machine_paths``), the ``weights`` (a state dict) in float16 (split into files of at most ``max_file_mib``
    MiB when given), and ``manifest.json`` with every file's sha256 and the provenance read from ``state``
    (``command``: default ``train_command(config)``). ``dest`` may exist when empty; otherwise only with
    ``overwrite``. Nothing is half-written: the folder is assembled beside ``dest`` and renamed into place."""
    dest = Path(dest)
    if dest.exists() and not overwrite and (not dest.is_dir() or any(dest.iterdir())):
        raise ValueError(f"{dest} exists already; pass overwrite=True (cdn export --force) to replace it")
    if max_file_mib is not None and max_file_mib <= 0:
        raise ValueError(f"max_file_mib must be > 0, got {max_file_mib}")
    tmp = dest.with_name(f".{dest.name}.export-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        atomic_write_text(tmp / "config.json", json.dumps(config.to_dict(), indent=1))
        atomic_write_text(tmp / "state.json", json.dumps(state, indent=1))
        atomic_write_text(tmp / "metrics.json", json.dumps(metrics, indent=1))
        atomic_write_text(tmp / "log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        files = save_weights(weights, tmp, torch.float16, None if max_file_mib is None else int(max_file_mib * 2**20))
        manifest = {"format": MANIFEST_FORMAT, "run": state.get("run") or config.run_name(), "weights": files, "dtype": "float16",
                    "files": {f: sha256_file(tmp / f) for f in [*COMMITTED_FILES, *files]},
                    "provenance": {"command": command or train_command(config), "commit": state.get("commit"),
                                   "machine": state.get("machine") or state.get("device"),
                                   "torch": state.get("torch"), "precision": state.get("autocast"),
                                   "wall_time_s": state.get("elapsed_s"),
                                   "steps": state.get("step"), "epochs": state.get("epochs")}}
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1))
        check_portable(tmp, machine_paths)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return dest
