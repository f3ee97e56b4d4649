"""Variants of one training step timed in one process, interleaved: round after round, every variant runs one
step, in an order that rotates from round to round, on the same network, optimiser and batch. On a shared
machine whose speed drifts by 10-20% from one process to the next, the per-round ratios to the reference are
far steadier than times taken in separate processes (``python -m benchmarks``), so a change of a few percent
can be told from noise (chapter "Efficiency").

    python -m benchmarks.paired [--loss default|first] [--width 16] [--batch 128] [--rounds 9] [--out results/paired-MACHINE.json]

Variants (``VARIANTS``): ``train_step`` (what ``cdn train`` runs: ``precision`` "auto", the closed forms of
``cdn.nets.second_order`` where they are used), ``norms_only`` (the closed forms of GroupNorm and GELU with
PyTorch's convolutions), ``reference`` (plain float32 autograd) and ``ce`` (a cross-entropy step of the same
network, for the ratio joint / cross-entropy). The ratios are medians over rounds of ``t_variant / t_reference``
(and of ``t_variant / t_ce``) taken within each round. The process's memory allocator is what ``cdn train``
sets (``cdn.train.tune_allocator``) unless ``--plain-allocator``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from benchmarks import write_result

VARIANTS = ("train_step", "norms_only", "reference", "ce")


def paired_times(loss: str = "default", width: int = 16, batch: int = 128, size: int = 32, rounds: int = 9,
                 warmup: int = 2, device: str = "cpu") -> dict:
    """``{"seconds": {variant: [t per round]}, "median_s", "over_reference", "over_ce"}``: each variant's step time
    in every round (after ``warmup`` rounds), its median, and the medians of its per-round ratios to the reference
    step and to the cross-entropy step. ``loss``: ``"default"`` (``cdn.train.make_loss`` for the model
    ``gradresnet``, on its network) or ``"first"`` (``JointLoss()``, the first settings, on the same network)."""
    import torch

    from cdn.joint import JointModel
    from cdn.losses import CrossEntropyLoss, JointLoss
    from cdn.nets import build_net, second_order
    from cdn.nets.second_order import use_second_order
    from cdn.profiles import MODELS, get_config
    from cdn.train import autocast_bf16, make_loss, make_optimizer, train_step

    if loss not in ("default", "first"):
        raise ValueError(f"loss must be 'default' or 'first', got {loss!r}")
    dev = torch.device(device)
    torch.manual_seed(0)
    config = get_config("quick", "gradresnet")
    net = build_net(MODELS["gradresnet"][0], 10, 3, width).to(dev)
    model = JointModel(net)
    opt = make_optimizer(net, config, dev)
    x, c = torch.rand(batch, 3, size, size, device=dev), torch.randint(0, 10, (batch,), device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    joint = make_loss(config) if loss == "default" else JointLoss()
    use_amp = autocast_bf16(config, dev)
    fast = use_second_order("joint", dev)

    def step(variant):
        second_order.CONV = variant != "norms_only"
        try:
            if variant == "ce":
                train_step(model, CrossEntropyLoss(), opt, x, c, gen, use_amp=use_amp, grad_clip=config.grad_clip,
                           params=net.parameters())
            else:
                ref = variant == "reference"
                train_step(model, joint, opt, x, c, gen, use_amp=use_amp and not ref, fast_second_order=fast and not ref,
                           grad_clip=config.grad_clip, params=net.parameters())
        finally:
            second_order.CONV = True
        if dev.type == "cuda":
            torch.cuda.synchronize()

    seconds = {v: [] for v in VARIANTS}
    for r in range(warmup + rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for v in order:
            t = time.perf_counter()
            step(v)
            if r >= warmup:
                seconds[v].append(time.perf_counter() - t)
    ratio = lambda v, base: statistics.median(a / b for a, b in zip(seconds[v], seconds[base]))  # noqa: E731
    return {"seconds": seconds, "median_s": {v: statistics.median(s) for v, s in seconds.items()},
            "over_reference": {v: ratio(v, "reference") for v in VARIANTS},
            "over_ce": {v: ratio(v, "ce") for v in VARIANTS},
            "precision": "bf16" if use_amp else "float32",
            "second_order": second_order.DESCRIPTION if fast else "autograd"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.paired", description=__doc__.split("\n\n")[0])
    p.add_argument("--loss", default="default", choices=("default", "first"))
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--plain-allocator", action="store_true", help="leave the C library's allocator as it starts")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from cdn.provenance import device_description, git_commit
    from cdn.train import set_cpu_threads, tune_allocator

    set_cpu_threads()
    allocator = "plain" if a.plain_allocator else tune_allocator()
    out = {"command": "python -m benchmarks.paired " + " ".join(argv if argv is not None else sys.argv[1:]),
           "commit": git_commit(), "machine": device_description("cpu"), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "allocator": allocator, "loss": a.loss, "width": a.width,
           "batch": a.batch, "size": a.size, "rounds": a.rounds}
    out.update(paired_times(a.loss, a.width, a.batch, a.size, a.rounds, a.warmup))
    for v in VARIANTS:
        print(f"{v:<11} {1000 * out['median_s'][v]:7.0f} ms  / reference {out['over_reference'][v]:.3f}  "
              f"/ cross-entropy step {out['over_ce'][v]:.3f}")
    return write_result(out, a.out)


if __name__ == "__main__":
    main()
