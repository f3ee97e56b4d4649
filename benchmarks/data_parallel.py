"""One process with T threads against W processes with one thread each (``torch.distributed`` over gloo, the
global batch split in W shards, gradients averaged by ``DistributedDataParallel`` as ``cdn train`` does under
torchrun): the same global step, timed both ways (chapter "Efficiency").

    python -m benchmarks.data_parallel [--loss default|first] [--batch 128] [--processes 2] [--repeats 2] [--out FILE]

On a CPU with few cores, a step made of many small operators loses time in the OpenMP synchronisation of
every operator; W processes of one thread each run their shards without it and meet once, for the gradient's
all-reduce. Each configuration runs in its own spawned processes (``--repeats`` times, alternating, because
processes differ in speed from one launch to the next); inside each, the step ``cdn train`` runs
(``train_step``) and float32 autograd (``reference``) alternate round after round, and every timed step starts
and ends at a barrier, so a step's time is the slowest rank's. The equivalent training command is
``OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=W -m cdn train ...``.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

from benchmarks import write_result

VARIANTS = ("train_step", "reference")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, threads: int, port: int, loss: str, width: int, batch: int, size: int,
            rounds: int, warmup: int, queue) -> None:
    """Rank ``rank`` of ``world``: time ``rounds`` interleaved steps of each variant on its shard of the batch."""
    import torch
    import torch.distributed as dist

    from cdn.joint import JointModel
    from cdn.losses import JointLoss
    from cdn.nets import build_net
    from cdn.nets.second_order import use_second_order
    from cdn.profiles import MODELS, get_config
    from cdn.train import make_loss, make_optimizer, train_step, tune_allocator

    torch.set_num_threads(threads)
    tune_allocator()
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if world > 1 and threads == 1 and len(cores) >= world:  # one core each, as taskset would
        os.sched_setaffinity(0, {cores[rank]})
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
        dist.init_process_group("gloo")
    torch.manual_seed(0)
    config = get_config("quick", "gradresnet", precision="float32")
    net = build_net(MODELS["gradresnet"][0], 10, 3, width)
    target = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        target = DistributedDataParallel(net)
        target.noise_conditioning = False
    model = JointModel(target)
    opt = make_optimizer(net, config, torch.device("cpu"))
    x, c = torch.rand(batch, 3, size, size), torch.randint(0, 10, (batch,))
    local = batch // world
    x, c = x[rank * local:(rank + 1) * local], c[rank * local:(rank + 1) * local]
    gen = torch.Generator().manual_seed(rank)
    joint = make_loss(config) if loss == "default" else JointLoss()
    fast = use_second_order("joint", "cpu")
    sync = dist.barrier if world > 1 else (lambda: None)
    seconds = {v: [] for v in VARIANTS}
    for r in range(warmup + rounds):
        for v in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            sync()
            t = time.perf_counter()
            train_step(model, joint, opt, x, c, gen, fast_second_order=fast and v == "train_step",
                       grad_clip=config.grad_clip, params=net.parameters())
            sync()
            if r >= warmup:
                seconds[v].append(time.perf_counter() - t)
    if rank == 0:
        queue.put(seconds)
    if world > 1:
        dist.destroy_process_group()


def time_configuration(world: int, threads: int, loss: str = "default", width: int = 16, batch: int = 128,
                       size: int = 32, rounds: int = 5, warmup: int = 2) -> dict:
    """``{variant: [seconds per global step, one per round]}`` for ``world`` spawned processes of ``threads``
    threads each (rank 0's clock; every step is bracketed by barriers)."""
    import torch.multiprocessing as mp

    if batch % world:
        raise ValueError(f"the batch {batch} must be divisible by the number of processes {world}")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, world, threads, port, loss, width, batch, size, rounds, warmup, queue))
             for r in range(world)]
    for p in procs:
        p.start()
    seconds = queue.get()
    for p in procs:
        p.join()
        if p.exitcode:
            raise RuntimeError(f"a benchmark process exited with code {p.exitcode}")
    return seconds


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.data_parallel", description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", default="default", choices=("default", "first"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--processes", type=int, default=None, help="W (default: the cores available)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from cdn.provenance import device_description, git_commit

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    world = a.processes or cores
    configurations = {f"1 process x {cores} threads": (1, cores), f"{world} processes x 1 thread": (world, 1)}
    runs = {name: {v: [] for v in VARIANTS} for name in configurations}
    for _ in range(a.repeats):
        for name, (w, t) in configurations.items():
            for v, s in time_configuration(w, t, a.loss, a.width, a.batch, a.size, a.rounds, a.warmup).items():
                runs[name][v].extend(s)
    median = {name: {v: statistics.median(s) for v, s in r.items()} for name, r in runs.items()}
    (one, many) = configurations
    out = {"command": "python -m benchmarks.data_parallel " + " ".join(argv if argv is not None else sys.argv[1:]),
           "commit": git_commit(), "machine": device_description("cpu"), "torch": torch.__version__,
           "loss": a.loss, "width": a.width, "batch": a.batch, "size": a.size, "rounds": a.rounds,
           "repeats": a.repeats, "seconds": runs, "median_s": median,
           "summary": {"reference_over_train_step_one_process": median[one]["reference"] / median[one]["train_step"],
                       "one_process_over_processes_train_step": median[one]["train_step"] / median[many]["train_step"],
                       "reference_one_process_over_train_step_processes":
                           median[one]["reference"] / median[many]["train_step"]}}
    for name in configurations:
        print(f"{name:<26} " + "  ".join(f"{v} {1000 * median[name][v]:6.0f} ms" for v in VARIANTS))
    for k, v in out["summary"].items():
        print(f"{k}: {v:.3f}")
    return write_result(out, a.out)


if __name__ == "__main__":
    main()
