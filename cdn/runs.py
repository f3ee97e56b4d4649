"""Run directories keyed by a hash of their configuration: train once, reuse everywhere (every
chapter gets its models through ``get_or_train``).

``runs/<dataset>-<model>-<profile>-<hash>/`` holds ``config.json``, ``log.jsonl``, ``ckpt/``,
``model.safetensors``, ``state.json`` and ``metrics.json``. A finished run is reused, an unfinished
one resumed from its last checkpoint, and a run whose configuration differs has another hash and
is never reused. The root is ``$CDN_RUNS`` or ``runs/`` in the repository.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from . import data as data_mod
from . import distributed
from .checkpoint import CheckpointError, atomic_write_text, load_model_state, load_tensors
from .evaluate import DEFAULT_SIGMAS, DENOISE_SIGMAS, classification_vs_sigma, joint_denoisers, psnr_vs_sigma
from .joint import JointModel
from .profiles import Config
from .train import default_device, make_net, read_log, train


def runs_root(root: str | Path | None = None) -> Path:
    """Where runs live: ``root``, else ``$CDN_RUNS``, else ``runs/`` in the repository."""
    if root is not None:
        return Path(root)
    if os.environ.get("CDN_RUNS"):
        return Path(os.environ["CDN_RUNS"])
    return data_mod.REPO_ROOT / "runs"


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


@dataclass
class Run:
    """A trained (or training) run: its directory, configuration, state and network."""

    dir: Path
    config: Config
    state: dict
    net: torch.nn.Module

    @property
    def model(self) -> JointModel:
        return JointModel(self.net)

    @property
    def name(self) -> str:
        return self.dir.name

    def log(self) -> list[dict]:
        return read_log(self.dir)

    def metrics(self, test_set: data_mod.ImageDataset, sigmas=DEFAULT_SIGMAS, denoise_sigmas=DENOISE_SIGMAS,
                seed: int = 0) -> dict:
        """Classification and denoising metrics against sigma on ``test_set``, cached in
        ``metrics.json`` (recomputed when the test set, the sigmas or the seed differ)."""
        key = {"test": test_set.source, "n": len(test_set), "sigmas": list(sigmas),
               "denoise_sigmas": list(denoise_sigmas), "seed": seed}
        path = self.dir / "metrics.json"
        device = next(self.net.parameters()).device
        info = distributed.current()
        cached = json.loads(path.read_text()) if path.exists() else {}
        # under torch.distributed every rank must take the same branch: rank 0's cache decides
        if distributed.broadcast_int(int(cached.get("key") == key), info, device):
            return cached
        out: dict = {"key": key, "run": self.name, "model": self.config.model, "profile": self.config.profile,
                     "train_data": self.state.get("data"), "steps": self.state.get("step"),
                     "epochs": self.state.get("epochs"), "train_time_s": self.state.get("elapsed_s")}
        if self.config.objective != "mse":
            out["classification"] = classification_vs_sigma(self.model, test_set, sigmas, seed=seed, device=device)
            out["clean_accuracy"] = out["classification"][0]["accuracy"] if sigmas[0] == 0 else None
        if self.config.objective == "mse":
            net = self.net.eval()
            out["denoising"] = psnr_vs_sigma({"D(y)": lambda y, s, c: net(y)}, test_set, denoise_sigmas, seed=seed,
                                             device=device)
        elif self.config.objective == "joint":
            self.net.eval()
            out["denoising"] = psnr_vs_sigma(joint_denoisers(self.model, test_set.num_classes), test_set,
                                             denoise_sigmas, seed=seed, device=device)
        if info.is_main:
            atomic_write_text(path, json.dumps(out, indent=1))
        return out


def get_or_train(config: Config, data: Data | None = None, data_dir=None, root=None, device=None,
                 progress: bool | None = None) -> Run:
    """The run of ``config``: loaded when finished, resumed when interrupted, trained otherwise."""
    data = data or resolve_data(config, data_dir)
    if data.config.dataset != config.dataset:  # the data fell back (e.g. to digits): key the run by it
        config = dataclasses.replace(config, dataset=data.config.dataset)
    run_dir = runs_root(root) / config.run_name()
    state_path = run_dir / "state.json"
    if state_path.exists() and json.loads(state_path.read_text()).get("finished"):
        return load_run(run_dir, device)
    train(config, run_dir, data.train, device=device, progress=progress)
    return load_run(run_dir, device)


def load_run(run_dir: str | Path, device=None) -> Run:
    """Load a finished run from its directory: config.json, state.json and model.safetensors (never
    pickle). Raises ``FileNotFoundError`` for a missing or unfinished run and ``CheckpointError`` for
    weights that do not fit the configured architecture."""
    run_dir = Path(run_dir)
    for name in ("config.json", "state.json", "model.safetensors"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir} is not a finished run: {name} is missing")
    config = Config.from_dict(json.loads((run_dir / "config.json").read_text()))
    state = json.loads((run_dir / "state.json").read_text())
    device = torch.device(device) if device is not None else default_device()
    net = make_net(config, state["num_classes"], state["in_channels"])
    load_model_state(net, load_tensors(run_dir / "model.safetensors"), f"{run_dir / 'model.safetensors'}")
    return Run(run_dir, config, state, net.to(device).eval())


__all__ = ["Run", "Data", "get_or_train", "load_run", "resolve_data", "runs_root", "CheckpointError"]
