"""Run directories keyed by a hash of their configuration: train once, reuse everywhere (every
chapter gets its models through ``get_or_train``).

``runs/<dataset>-<model>-<profile>-<hash>/`` holds ``config.json``, ``log.jsonl``, ``ckpt/``,
``model.safetensors``, ``state.json`` and ``metrics.json``. A finished run is reused, an unfinished
one resumed from its last checkpoint, and a run whose configuration differs has another hash and
is never reused. The root is ``$CDN_RUNS`` or ``runs/`` in the repository.

Committed runs. Runs that took long to train are committed under
``results/<profile>-<dataset>/<model>/`` (``committed_dir``), written by ``export_run`` (``cdn
export``): ``config.json``, ``state.json``, ``log.jsonl``, ``metrics.json``, the weights in half
precision (``model.safetensors``, or ``model-0000i-of-0000N.safetensors`` files of bounded size) and
``manifest.json``, the sha256 of each of those files and the run's name; data are named by file name
and sha256 (``state.json``'s ``data_record``), never by a path of the machine that trained them. One
``RUN.md`` per profile folder tells how each was made (command, commit, machine, wall time).
``get_or_train`` uses the committed run whose recorded name (hash) equals the configuration's,
after checking every file's sha256 (a mismatch raises ``CheckpointError``: never a silent retrain),
unless asked to retrain (``retrain=True``, ``$CDN_RETRAIN=1``, ``cdn train --retrain``, ``cdn book
--retrain``): then committed runs are ignored and the run is trained (or reused) under the runs root.
Metrics a chapter computes for a committed run that its ``metrics.json`` does not hold are written
under ``<runs root>/committed/<run name>/``, never into ``results/``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from . import distributed
from .checkpoint import CheckpointError, atomic_write_text, load_model_state, load_weights, weight_files
from .committed import (MANIFEST, committed_dir, find_committed, precision_note, retrain_requested,
                        verify_committed, write_committed, write_run_md)
from .evaluate import DEFAULT_SIGMAS, DENOISE_SIGMAS, classification_vs_sigma, joint_denoisers, psnr_vs_sigma
from .joint import JointModel
from .profiles import Config
from .provenance import data_record, portable_source
from .train import default_device, make_net, read_log, train


def runs_root(root: str | Path | None = None) -> Path:
    """Where runs live: ``root``, else ``$CDN_RUNS``, else ``runs/`` in the repository."""
    return data_mod.repo_folder(root, "CDN_RUNS", "runs")


@dataclass
class Data:
    """The training and test sets a configuration resolved to (after any fallback)."""

    train: data_mod.ImageDataset
    test: data_mod.ImageDataset
    config: Config

    @property
    def source(self) -> str:
        return self.train.source


def resolve_data(config: Config, data_dir=None) -> Data:
    """Load the train and test sets of ``config`` (subset sizes, class limit). If the dataset is
    missing and ``config.allow_fallback``, the digits stand in and the returned config says
    ``dataset='digits'``, so the run is keyed by the data it really used."""
    train_set = data_mod.load(config.dataset, "train", data_dir, None, config.seed, config.allow_fallback)
    if train_set.fallback and config.dataset != "digits":
        config = dataclasses.replace(config, dataset="digits")
    test_set = data_mod.load(config.dataset, "test", data_dir, None, config.seed, config.allow_fallback)
    if config.max_classes is not None:
        train_set, test_set = (_first_classes(d, config.max_classes) for d in (train_set, test_set))
    return Data(train_set.subset(config.train_size, config.seed), test_set.subset(config.test_size, config.seed), config)


def _first_classes(ds: data_mod.ImageDataset, k: int) -> data_mod.ImageDataset:
    keep = ds.labels < k
    return data_mod.ImageDataset(ds.images[keep], ds.labels[keep], ds.classes[:k], ds.name,
                                 ds.source + f", first {k} classes", ds.fallback)


def _metrics_key_matches(cached: dict, key: dict) -> bool:
    """Whether a cached metrics key equals ``key``, comparing the test set's description without paths
    (keys written before ``portable_source`` held absolute paths)."""
    old = cached.get("key")
    if not isinstance(old, dict):
        return False
    return {**old, "test": portable_source(old.get("test"))} == key


@dataclass
class Run:
    """A trained (or training) run: its directory, configuration, state and network.
    ``metrics_dir`` is where metrics computed later are written: the run's own directory, or for a
    committed run (``committed``) a folder under the runs root, so that ``results/`` is never written."""

    dir: Path
    config: Config
    state: dict
    net: torch.nn.Module
    metrics_dir: Path | None = None
    committed: bool = False

    @property
    def model(self) -> JointModel:
        return JointModel(self.net)

    @property
    def name(self) -> str:
        """The run's name, ``<dataset>-<model>-<profile>-<hash>`` (the directory of an ordinary run)."""
        return self.state.get("run") or self.dir.name

    def log(self) -> list[dict]:
        return read_log(self.dir)

    def metrics(self, test_set: data_mod.ImageDataset, sigmas=DEFAULT_SIGMAS, denoise_sigmas=DENOISE_SIGMAS,
                seed: int = 0, tta_flip: bool | None = None) -> dict:
        """Classification and denoising metrics against sigma on ``test_set``, cached in
        ``metrics.json`` (recomputed when the test set, the sigmas, the seed or the test-time flips
        differ). ``tta_flip`` (default ``config.tta_flip``): classification averages over the image and
        its mirror image (``cdn.evaluate.classify_flip``). A committed run's own ``metrics.json`` is
        used when its key matches; otherwise the metrics go to ``metrics_dir``."""
        tta = self.config.tta_flip if tta_flip is None else bool(tta_flip)
        key = {"test": portable_source(test_set.source), "n": len(test_set), "sigmas": list(sigmas),
               "denoise_sigmas": list(denoise_sigmas), "seed": seed}
        if tta:
            key["tta_flip"] = True
        out_dir = self.metrics_dir or self.dir
        device = next(self.net.parameters()).device
        info = distributed.current()
        cached = {}
        for path in dict.fromkeys([self.dir / "metrics.json", out_dir / "metrics.json"]):
            found = json.loads(path.read_text()) if path.exists() else {}
            if _metrics_key_matches(found, key):
                cached = found
                break
        # under torch.distributed every rank must take the same branch: rank 0's cache decides
        if distributed.broadcast_int(int(bool(cached)), info, device):
            return cached
        out: dict = {"key": key, "run": self.name, "model": self.config.model, "profile": self.config.profile,
                     "train_data": portable_source(self.state.get("data")), "steps": self.state.get("step"),
                     "epochs": self.state.get("epochs"), "train_time_s": self.state.get("elapsed_s")}
        if self.config.objective != "mse":
            out["classification"] = classification_vs_sigma(self.model, test_set, sigmas, seed=seed, device=device,
                                                            tta_flip=tta)
            out["clean_accuracy"] = out["classification"][0]["accuracy"] if sigmas[0] == 0 else None
        if self.config.objective == "mse":
            net = self.net.eval()
            out["denoising"] = psnr_vs_sigma({"D(y)": lambda y, s, c: net(y)}, test_set, denoise_sigmas, seed=seed,
                                             device=device)
        elif self.config.objective in ("joint", "dsm_conditional"):
            self.net.eval()
            out["denoising"] = psnr_vs_sigma(joint_denoisers(self.model, test_set.num_classes), test_set,
                                             denoise_sigmas, seed=seed, device=device)
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "metrics.json", json.dumps(out, indent=1))
        return out


# ------------------------------------------------------------------------------ committed runs --


def get_or_train(config: Config, data: Data | None = None, data_dir=None, root=None, device=None,
                 progress: bool | None = None, retrain: bool | None = None, results=None) -> Run:
    """The run of ``config``: the committed run of the same hash when there is one (``find_committed``;
    not with ``retrain``, which defaults to ``$CDN_RETRAIN``), else the finished run under the runs root,
    resumed when interrupted, trained otherwise."""
    data = data or resolve_data(config, data_dir)
    if data.config.dataset != config.dataset:  # the data fell back (e.g. to digits): key the run by it
        config = dataclasses.replace(config, dataset=data.config.dataset)
    retraining = retrain_requested() if retrain is None else retrain
    if not retraining:
        committed = find_committed(config, results)
        if committed is not None:
            return load_run(committed, device, metrics_dir=runs_root(root) / "committed" / config.run_name(),
                            verify=False)
    run_dir = runs_root(root) / config.run_name()
    state_path = run_dir / "state.json"
    if not (state_path.exists() and json.loads(state_path.read_text()).get("finished")):
        train(config, run_dir, data.train, device=device, progress=progress)
    run = load_run(run_dir, device)
    if retraining:
        note = precision_note(run.state, find_committed(config, results))
        if note:
            print(f"[cdn] {note}")
    return run


def load_run(run_dir: str | Path, device=None, metrics_dir: str | Path | None = None, verify: bool = True) -> Run:
    """Load a finished run from its directory: config.json, state.json and the weights
    (``model.safetensors`` or its split files; half precision is cast to the network's float32;
    never pickle). A committed run (one with ``manifest.json``) is checked against its sha256 first
    (``verify_committed``, skipped with ``verify=False`` when just done) and its new metrics go to
    ``metrics_dir`` (default ``<runs root>/committed/<run name>``). Raises ``FileNotFoundError`` for a
    missing or unfinished run and ``CheckpointError`` for corrupted files or weights that do not fit
    the configured architecture."""
    run_dir = Path(run_dir)
    committed = (run_dir / MANIFEST).is_file()
    if committed and verify:
        verify_committed(run_dir)
    for name in ("config.json", "state.json"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {name} is missing")
    weight_files(run_dir)  # a clear FileNotFoundError when there are none
    config = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = json.loads((run_dir / "state.json").read_text())
    device = torch.device(device) if device is not None else default_device()
    net = make_net(config, state["num_classes"], state["in_channels"])
    load_model_state(net, load_weights(run_dir), f"the weights in {run_dir}")
    if committed and metrics_dir is None:
        metrics_dir = runs_root() / "committed" / (state.get("run") or run_dir.name)
    return Run(run_dir, config, state, net.to(device).eval(), Path(metrics_dir) if metrics_dir else None, committed)


# ------------------------------------------------------------------------------------ export --


def export_run(run_dir: str | Path, dest: str | Path | None = None, data_dir=None, command: str | None = None,
               max_file_mib: float | None = None, overwrite: bool = False, device=None, run_md: bool = True) -> Path:
    """Write the finished run in ``run_dir`` as a committed run into ``dest`` (default
    ``committed_dir(config)``: ``results/<profile>-<dataset>/<model>/``, or ``<model>-<hash>/``) and return ``dest``:
    the weights in float16 (split into files of at most ``max_file_mib`` MiB when given), config,
    state and metrics without any path of this machine (the data named by file and sha256,
    ``cdn.provenance.data_record``), the log, ``manifest.json`` with every file's sha256, and the
    profile folder's ``RUN.md`` brought up to date (``write_run_md``; not with ``run_md=False``, as
    ``cdn.experiments.gpu_sprint``, which writes its own into ``dest``). ``dest`` may exist when empty; otherwise only
    with ``overwrite``. Metrics are computed on the
    configuration's test set when the run has none. ``command`` is the command that trained it
    (default ``train_command``). Used by ``cdn export``; the result is what ``get_or_train`` reuses.
    Nothing is half-written: the folder is assembled beside ``dest`` and renamed into place."""

    run_dir = Path(run_dir)
    state_path = run_dir / "state.json"
    if not state_path.is_file() or not json.loads(state_path.read_text()).get("finished"):
        raise FileNotFoundError(f"{run_dir} is not a finished run (no state.json with finished: true); train it first")
    run = load_run(run_dir, device or "cpu")
    config = run.config
    metrics_path = next((p for p in (run_dir / "metrics.json", (run.metrics_dir or run_dir) / "metrics.json")
                         if p.is_file()), None)
    metrics = json.loads(metrics_path.read_text()) if metrics_path else \
        run.metrics(resolve_data(config, data_dir).test)
    state = dict(run.state, data=portable_source(run.state.get("data")),
                 data_record=data_record(config.dataset, data_dir))
    metrics = dict(metrics, train_data=portable_source(metrics.get("train_data")),
                   key=dict(metrics.get("key", {}), test=portable_source(metrics.get("key", {}).get("test"))))
    dest = write_committed(dest if dest is not None else committed_dir(config), config, state, metrics, run.log(),
                           run.net.state_dict(), command, max_file_mib, overwrite,
                           [run_dir, runs_root(), data_mod.REPO_ROOT, Path.home(), *data_mod.candidate_dirs(data_dir)])
    if run_md:
        write_run_md(dest.parent)
    return dest


__all__ = ["Run", "Data", "get_or_train", "load_run", "resolve_data", "runs_root", "export_run", "CheckpointError"]
