"""Where a result comes from, in words that hold on every machine: the git commit, the device, and the
data by file name and sha256 (never a path of the machine that made it). Every committed result and every
chapter's provenance box records these."""
from __future__ import annotations

import functools
import re
import platform
import subprocess
from pathlib import Path

import torch

from .checkpoint import sha256_file
from . import data as data_mod
from .data import REPO_ROOT, candidate_dirs

_PAREN = re.compile(r"\(([^()]*)\)")

def git_commit(repo: str | Path | None = None) -> str:
    """The short commit hash of the repository, followed by ``uncommitted`` when the work tree has
    changes (tracked or untracked, ignored files excepted) outside ``results/`` (what runs write, not the code
    that ran); ``unknown (...)`` outside a git checkout."""
    repo = Path(repo) if repo is not None else REPO_ROOT
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--", ".", ":(exclude)results"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git not available)"
    commit = head.stdout.strip()
    return f"{commit} + uncommitted changes" if dirty.stdout.strip() else commit


def _cpu_model() -> str | None:
    """The processor's model name from /proc/cpuinfo (Linux), or None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def device_description(device: str | torch.device | None = None) -> str:
    """The device the chapter's models run on, in words: the CUDA device's name, or ``cpu`` with the
    processor and the number of torch threads."""
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(dev)})"
    cpu = _cpu_model() or platform.processor() or platform.machine() or "unknown processor"
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


@functools.lru_cache(maxsize=None)
def _data_file_sha256(name: str) -> str | None:
    """The sha256 of the data file ``name`` in the data folders (``cdn.data.candidate_dirs``), None if absent."""
    for d in candidate_dirs(None):
        if (d / name).is_file():
            return sha256_file(d / name)
    return None


_DATA_FILE = re.compile(r"\(([^()]*?\.(?:tar\.gz|tgz|zip|npz))([,)])")


def described_data(data_source: str) -> str:
    """``data_source`` without this machine's paths (``cdn.provenance.portable_source``), each data file named with
    the first 12 hex digits of its sha256 where the file is found: ``CIFAR-10 JPEG copy (/data/cifar10-jpeg.tar.gz)``
    -> ``CIFAR-10 JPEG copy (cifar10-jpeg.tar.gz, sha256 45b041e867f5)``."""
    def with_digest(m: re.Match) -> str:
        digest = _data_file_sha256(m.group(1))
        return f"({m.group(1)}, sha256 {digest[:12]}{m.group(2)}" if digest else m.group(0)

    return _DATA_FILE.sub(with_digest, portable_source(data_source))


def data_record(dataset: str, data_dir=None) -> dict:
    """The data by file name and sha256 (never a path of this machine)."""
    names = {"cifar10": ("cifar10-jpeg.tar.gz", "cifar10.tar.gz"), "tiny-imagenet": ("tiny-imagenet-subset.tar.gz",)}
    for d in data_mod.candidate_dirs(data_dir):
        for name in names.get(dataset, ()):
            if (d / name).is_file():
                return {"dataset": dataset, "file": name, "sha256": sha256_file(d / name)}
    return {"dataset": dataset, "file": None, "sha256": None}


def portable_source(source: str | None) -> str | None:
    """A data description without this machine's paths: every absolute path inside parentheses is
    replaced by its last component (``CIFAR-10 JPEG copy (/data/cifar10-jpeg.tar.gz), subset of 2000``
    -> ``CIFAR-10 JPEG copy (cifar10-jpeg.tar.gz), subset of 2000``). Used in the key of cached metrics
    and in exported runs, so that they match on every machine."""
    if source is None:
        return None

    def strip(m: re.Match) -> str:
        parts = [p.strip() for p in m.group(1).split(",")]
        parts = [Path(p).name if (p.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", p)) else p
                 for p in parts]
        return "(" + ", ".join(parts) + ")"

    return _PAREN.sub(strip, source)
