"""Checkpoints as safetensors plus JSON, written atomically and verified by sha256; nothing here ever
unpickles (chapter "Training the joint model", and every chapter that loads a run).

A training checkpoint ``ckpt/step-00000200.safetensors`` holds the model, the optimiser state and
the random-generator states as tensors; its sidecar ``ckpt/step-00000200.json`` holds the step,
the optimiser's hyper-parameters and the file's sha256. A checkpoint counts only when its sidecar
exists and the hash matches, so a write killed half-way is never loaded: the tensors go to
``step-*.safetensors.tmp`` and are renamed, then the sidecar (written the same way) makes the
checkpoint count. A kill leaves at worst a ``.tmp`` file or a safetensors file without sidecar,
both ignored (and the ``.tmp`` removed by ``remove_stale_tmp``), and the previous checkpoint intact.

A finished run's weights are ``model.safetensors`` or, split into files of bounded size (a GPU
sprint's, ``cdn.experiments.gpu_sprint``), ``model-00001-of-0000N.safetensors`` ... (``save_weights``,
``load_weights``); either may be half precision, and ``load_model_state`` casts to the network's dtype.

A data-parallel run stores every rank's generator state (``rng/generator`` for rank 0,
``rng/generator.R`` for rank R), so each rank resumes its own noise stream.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT = "cdn-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupted, not safetensors, or of another architecture."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, fsync and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> str:
    """Save ``tensors`` as safetensors atomically; return the file's sha256."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    return digest


def load_tensors(path: Path, expected_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors file (never pickle); check its sha256 when given. Raises
    ``CheckpointError`` naming the file for anything that is not a valid safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"\x80\x02" or head[:2] == b"\x80\x04" or head[:4] == b"PK\x03\x04":
        raise CheckpointError(f"{str(path)!r} is a pickle/zip (torch.save) file; cdn loads only safetensors "
                              "and never unpickles a file it is handed")
    if expected_sha256 is not None and sha256_file(path) != expected_sha256:
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupted: its sha256 does not match its sidecar")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{str(path)!r} is not a valid safetensors file: {err}") from err


def save_training_checkpoint(ckpt_dir: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             generator, extra: dict, keep: int = 2,
                             extra_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``step-XXXXXXXX.safetensors`` and its JSON sidecar atomically; keep the last ``keep``.
    ``generator`` is a ``torch.Generator`` or, for a data-parallel run, the list of every rank's
    generator state in rank order. ``extra_tensors`` (e.g. the moving average of the weights,
    ``ema/*``) are stored beside the model's."""
    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_state = optimizer.state_dict()
    for idx, state in opt_state["state"].items():
        for k, v in state.items():
            tensors[f"optim/{idx}/{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
    states = [generator.get_state()] if isinstance(generator, torch.Generator) else list(generator)
    for r, st in enumerate(states):
        tensors["rng/generator" if r == 0 else f"rng/generator.{r}"] = st
    tensors["rng/torch_cpu"] = torch.get_rng_state()
    tensors.update(extra_tensors or {})
    path = ckpt_dir / f"step-{step:08d}.safetensors"
    digest = atomic_save_tensors(tensors, path, {"format": FORMAT})
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt_state["param_groups"]]
    sidecar = {"format": FORMAT, "step": step, "sha256": digest, "param_groups": groups,
               "world_size": len(states), **extra}
    atomic_write_text(path.with_suffix(".json"), json.dumps(sidecar, indent=1))
    for old in sorted(ckpt_dir.glob("step-*.json"))[:-keep]:
        old.unlink(missing_ok=True)
        old.with_suffix(".safetensors").unlink(missing_ok=True)
    return path


def latest_training_checkpoint(ckpt_dir: Path, log=None):
    """The newest checkpoint whose sidecar and hash are good, as ``(tensors, sidecar)``, or None.
    A corrupted newest checkpoint is reported through ``log`` and the previous one is used."""
    ckpt_dir = Path(ckpt_dir)
    for side in sorted(ckpt_dir.glob("step-*.json"), reverse=True):
        try:
            meta = json.loads(side.read_text())
            tensors = load_tensors(side.with_suffix(".safetensors"), meta["sha256"])
            return tensors, meta
        except (CheckpointError, json.JSONDecodeError, KeyError) as err:
            if log is not None:
                log(f"skipping bad checkpoint {side.name}: {err}")
    return None


def load_training_checkpoint(ckpt_dir: Path, step: int):
    """The checkpoint of ``step`` as ``(tensors, sidecar)``, verified; ``CheckpointError`` otherwise
    (used by the ranks other than 0, which load the checkpoint rank 0 chose)."""
    side = Path(ckpt_dir) / f"step-{step:08d}.json"
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint sidecar {str(side)!r} is missing or unreadable: {err}") from err
    return load_tensors(side.with_suffix(".safetensors"), meta.get("sha256")), meta


def remove_stale_tmp(ckpt_dir: Path) -> list[Path]:
    """Delete the ``*.tmp`` files a killed write left in ``ckpt_dir``; return them."""
    stale = sorted(Path(ckpt_dir).glob("*.tmp")) if Path(ckpt_dir).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def restore_training_checkpoint(tensors: dict, meta: dict, model, optimizer, generator, rank: int = 0) -> int:
    """Load model, optimiser and generator states from a checkpoint; return its step. ``rank``
    picks the generator state of that rank; when the checkpoint has none (it was written by fewer
    processes) the generator is left as it is and a ``KeyError`` is not raised: the caller reseeds."""
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    load_model_state(model, model_state, "training checkpoint")
    state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim/"):
            _, idx, name = k.split("/", 2)
            state.setdefault(int(idx), {})[name] = v
    groups = optimizer.state_dict()["param_groups"]
    for g, saved in zip(groups, meta["param_groups"]):
        g.update(saved)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    key = "rng/generator" if rank == 0 else f"rng/generator.{rank}"
    if key in tensors:
        generator.set_state(tensors[key])
    torch.set_rng_state(tensors["rng/torch_cpu"])
    return int(meta["step"])


WEIGHTS = "model.safetensors"
_SHARD = "model-{i:05d}-of-{n:05d}.safetensors"


def save_weights(state: dict[str, torch.Tensor], run_dir: Path, dtype: torch.dtype | None = None,
                 max_file_bytes: int | None = None) -> list[str]:
    """Write a network's ``state`` into ``run_dir`` as ``model.safetensors`` or, when ``max_file_bytes``
    is given and the weights do not fit in one file of that size, as ``model-0000i-of-0000N.safetensors``
    files of at most that size each; floating tensors cast to ``dtype`` when given (float16 for committed
    runs, ``cdn.runs.export_run``). Returns the file names. Raises ``ValueError`` when a weight does not
    fit in ``dtype`` (a non-finite value after the cast) or one tensor alone exceeds ``max_file_bytes``."""
    run_dir = Path(run_dir)
    out = {}
    for k, v in state.items():
        v = v.detach().cpu().contiguous()
        if dtype is not None and v.is_floating_point():
            cast = v.to(dtype)
            if not torch.isfinite(cast).all() and torch.isfinite(v).all():
                raise ValueError(f"weight {k!r} overflows {dtype} (max |w| = {v.abs().max().item():.3g}); "
                                 "export it in a wider dtype")
            v = cast
        out[k] = v
    # bytes in a file: 8 + its JSON header (under 200 bytes per tensor besides the name) + the data
    base = 512
    need = {k: v.numel() * v.element_size() + len(k) + 200 for k, v in out.items()}
    if max_file_bytes is None or base + sum(need.values()) <= max_file_bytes:
        atomic_save_tensors(out, run_dir / WEIGHTS, {"format": "cdn-model-1"})
        return [WEIGHTS]
    shards: list[dict] = [{}]
    size = base
    for k, v in out.items():
        if base + need[k] > max_file_bytes:
            raise ValueError(f"weight {k!r} alone needs {need[k]} bytes, more than max_file_bytes={max_file_bytes}")
        if size + need[k] > max_file_bytes:
            shards.append({})
            size = base
        shards[-1][k] = v
        size += need[k]
    names = [_SHARD.format(i=i + 1, n=len(shards)) for i in range(len(shards))]
    for name, shard in zip(names, shards):
        atomic_save_tensors(shard, run_dir / name, {"format": "cdn-model-1"})
        if (run_dir / name).stat().st_size > max_file_bytes:
            raise ValueError(f"{name} came out larger than max_file_bytes={max_file_bytes}")
    return names


def weight_files(run_dir: Path) -> list[Path]:
    """The weight files of a finished run: ``[model.safetensors]`` or every ``model-0000i-of-0000N``
    file, in order. Raises ``FileNotFoundError`` when there are none or a split set is incomplete."""
    run_dir = Path(run_dir)
    if (run_dir / WEIGHTS).is_file():
        return [run_dir / WEIGHTS]
    shards = sorted(run_dir.glob("model-*-of-*.safetensors"))
    if not shards:
        raise FileNotFoundError(f"{run_dir} is not a finished run: neither {WEIGHTS} nor model-*-of-*.safetensors")
    n = int(shards[0].name.split("-of-")[1].split(".")[0])
    want = [run_dir / _SHARD.format(i=i + 1, n=n) for i in range(n)]
    missing = [p.name for p in want if not p.is_file()]
    if missing or len(shards) != n:
        raise FileNotFoundError(f"{run_dir}: the split weights are incomplete (expected {n} files "
                                f"model-0000i-of-{n:05d}.safetensors; missing {missing})")
    return want


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights of a finished run, from one file or from all its split files (``weight_files``),
    as stored (half precision stays half: ``load_model_state`` casts)."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(run_dir):
        part = load_tensors(path)
        dup = set(part) & set(state)
        if dup:
            raise CheckpointError(f"{path} repeats weights of another split file: {sorted(dup)[:3]}")
        state.update(part)
    return state


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """``model.load_state_dict(state, strict=True)`` with a clear error for another architecture;
    floating tensors are cast to the model's dtype (half-precision committed weights into a float32
    network)."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{what} does not fit this {type(model).__name__}: it is of another architecture or width "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shapes {wrong[:3]})")
    model.load_state_dict({k: v.to(own[k].dtype) if v.is_floating_point() else v for k, v in state.items()})
