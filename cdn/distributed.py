"""Data-parallel training with PyTorch's own engine, ``torch.distributed`` (chapter "Training the
joint model", section on scaling out).

One machine, N processes (one per GPU, or N CPU processes with gloo)::

    torchrun --nproc_per_node=N -m cdn train --profile paper --model gradresnet
    # or, equivalently, from a launcher that sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT:
    cdn train --distributed --profile paper --model gradresnet

Several machines: run the same command on every node with a rendezvous point that all can reach
(torchrun's c10d rendezvous; ``HOST`` is any one of the nodes, the port must be open)::

    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29400 \\
             --rdzv_id=cdn-run-1 -m cdn train --profile paper --model gradresnet --runs /shared/runs

The run directory (``--runs``) must be on a filesystem every node sees: rank 0 alone writes the
log and the checkpoints, and on resume every rank reads the checkpoint rank 0 chose.

What each rank does (``cdn.train.train`` detects an initialised process group):

* the whole in-memory dataset is on every rank, and every rank computes the same per-epoch
  permutation (a function of seed and epoch); rank ``r`` of ``W`` takes the ``r``-th of ``W``
  equal slices of each global batch, so the global batch is ``config.batch_size`` whatever ``W``
  (it must be divisible by ``W``);
* the network is wrapped in ``DistributedDataParallel``; gradients are averaged across ranks, so a
  step equals one step of one process on the global batch with the mean loss of the shards;
* augmentation and noise come from a generator per rank seeded by ``rank_seed(seed, rank)``
  (rank 0 keeps ``seed``, so a one-process run is unchanged). The noise a run draws therefore
  depends on its world size, as in any data-parallel run; the checkpoint stores every rank's
  generator state, so a resume with the same world size is exact;
* evaluation at the end of training runs on every rank: rank ``r`` takes test batches ``r, r + W,
  ...`` (the evaluation noise is seeded per batch, so the split changes nothing), the results are
  gathered (``gather_objects``), and rank 0 prints them and writes ``metrics.json``;
* logging, the progress bar and checkpoints are rank 0's; a non-finite loss or a SIGTERM on any
  rank is agreed on by all ranks (one small all-reduce per step), so they stop together.

The double backward under DDP: the joint loss calls ``torch.autograd.grad(energy, y,
create_graph=True)`` inside the loss, i.e. between DDP's forward and ``loss.backward()``. That call
asks only for the gradient with respect to the *input* ``y``; autograd then runs no
``AccumulateGrad`` node of a parameter, so none of DDP's gradient-ready hooks fire and nothing is
all-reduced early. ``loss.backward()`` then differentiates through both the logits and the
(differentiable) score, and every parameter's ``AccumulateGrad`` fires exactly once, which is what
DDP's reducer expects; no ``no_sync`` and no ``find_unused_parameters`` are needed (every
parameter of the nets is used). ``tests/test_distributed.py`` checks the resulting weights against
a single process.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the world size, its rank on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """True when the environment variables of a torchrun (or SLURM-style) launch are set."""
    return all(os.environ.get(k, "").isdigit() for k in ("RANK", "WORLD_SIZE"))


def current() -> DistInfo:
    """This process's place in an initialised process group (rank 0 of 1 otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def init(device=None, timeout_s: float = 600.0) -> tuple[DistInfo, torch.device]:
    """Initialise the default process group from the environment (``env://``): NCCL when the
    device is a GPU, gloo on CPU. Returns the rank information and this rank's device
    (``cuda:LOCAL_RANK`` on GPUs). Raises ``ValueError`` when the launch variables are missing."""
    if not launched_by_torchrun():
        raise ValueError("--distributed needs the variables RANK and WORLD_SIZE (and MASTER_ADDR, MASTER_PORT) "
                         "set by a launcher: run `torchrun --nproc_per_node=N -m cdn train ...`")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device is None:
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method="env://", timeout=datetime.timedelta(seconds=timeout_s))
    return current(), device


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s noise generator: ``seed`` itself for rank 0 (a one-process run is
    unchanged), a hash of ``(seed, rank)`` otherwise (independent streams, no collisions between
    nearby seeds)."""
    if rank == 0:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"cdn:{seed}:{rank}".encode()).digest()[:7], "little")


def shard(batch_idx: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Rank ``info.rank``'s slice of a global batch of indices (equal slices)."""
    n = batch_idx.shape[0]
    if n % info.world_size:
        raise ValueError(f"batch_size {n} must be divisible by the number of processes {info.world_size}")
    local = n // info.world_size
    return batch_idx[info.rank * local:(info.rank + 1) * local]


def any_flag(flags: list[bool], info: DistInfo, device) -> list[bool]:
    """Logical OR of each flag across ranks (one all-reduce); the flags themselves on one process."""
    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def mean_across(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """The mean over ranks of each scalar in ``values`` (for the log); unchanged on one process."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.stack([torch.as_tensor(values[k]).float().reshape(()) for k in keys])
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: v / info.world_size for k, v in zip(keys, t)}


def gather_generator_states(generator: torch.Generator, info: DistInfo, device) -> list[torch.Tensor]:
    """Every rank's generator state, in rank order (collective: every rank must call it)."""
    state = generator.get_state()
    if not info.enabled:
        return [state]
    comm = torch.device(device) if torch.device(device).type == "cuda" else torch.device("cpu")
    local = state.to(comm)
    out = [torch.empty_like(local) for _ in range(info.world_size)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def broadcast_int(value: int, info: DistInfo, device) -> int:
    """Rank 0's ``value`` on every rank."""
    if not info.enabled:
        return value
    t = torch.tensor([int(value)], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def my_batches(num_batches: int, info: DistInfo) -> range:
    """The batch indices rank ``info.rank`` evaluates: ``rank, rank + W, rank + 2W, ...`` (all of
    them on one process). Evaluation noise is seeded per batch index, so the split changes nothing."""
    return range(info.rank, num_batches, info.world_size)


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` (picklable Python data or CPU tensors), in rank order; ``[obj]`` on one
    process (collective: every rank must call it). Used to gather evaluation results."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
