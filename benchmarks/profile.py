"""The operators that take a training step's time (chapter "Efficiency"): ``torch.profiler`` over a few
steps of ``cdn.train.train_step``, the top operators by self time, for the step ``cdn train`` runs and
for plain float32 autograd.

    python -m benchmarks.profile [--width 16] [--batch 128] [--steps 2] [--top 12] [--default-loss] [--out results/profile-joint-MACHINE.json]

Each step also reports ``convolution_ms``, the self time of every convolution kernel (forward and backward) in
a profiled step, and ``step_ms``, the median time of the same step unprofiled: with the reference's ``step_ms``,
the first says how fast any rewriting of the elementwise work could make the step while it keeps these
convolution kernels (chapter "Efficiency": a step twice as fast as autograd has ``step_ms / 2`` for all of it).
"""
from __future__ import annotations

import argparse
import sys

from benchmarks import write_result


def profile_step(arch: str = "gradresnet", width: int = 16, batch: int = 128, size: int = 32, steps: int = 2,
                 reference: bool = False, top: int = 12, device: str = "cpu", default_loss: bool = False) -> dict:
    """Self time per operator over ``steps`` joint training steps (after two warm-up steps): ``{"total_ms",
    "convolution_ms", "step_ms", "rows": [{"operator", "self_ms", "share", "calls"}]}`` for the ``top`` operators,
    ``share`` of the total self time; ``convolution_ms`` the self time of the operators named ``*convolution*`` per
    step, ``step_ms`` the median of ``steps`` unprofiled steps. ``reference``: float32 with PyTorch's own second
    derivatives; otherwise the step ``cdn train`` runs (``precision`` "auto", the closed forms of
    ``cdn.nets.second_order`` where they are used). ``default_loss``: the loss ``cdn train`` builds for the model
    ``gradresnet`` (``cdn.train.make_loss``) instead of ``JointLoss()``'s first settings."""
    import statistics
    import time

    import torch
    from torch.profiler import ProfilerActivity, profile

    from cdn.joint import JointModel
    from cdn.losses import JointLoss
    from cdn.nets import build_net
    from cdn.nets import second_order
    from cdn.nets.second_order import use_second_order
    from cdn.profiles import get_config
    from cdn.train import autocast_bf16, make_loss, make_optimizer, train_step

    dev = torch.device(device)
    torch.manual_seed(0)
    net = build_net(arch, 10, 3, width).to(dev)
    model = JointModel(net)
    config = get_config("smoke", "gradresnet", precision="float32" if reference else "auto")
    opt = make_optimizer(net, config, dev)
    x, c = torch.rand(batch, 3, size, size, device=dev), torch.randint(0, 10, (batch,), device=dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    use_amp = autocast_bf16(config, dev)
    fast = not reference and use_second_order("joint", dev)
    loss_fn = make_loss(get_config("quick", "gradresnet")) if default_loss else JointLoss()

    def step():
        train_step(model, loss_fn, opt, x, c, gen, use_amp=use_amp, fast_second_order=fast,
                   grad_clip=config.grad_clip, params=net.parameters())

    step(), step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: -e.self_cpu_time_total)
    rows = [{"operator": e.key, "self_ms": e.self_cpu_time_total / 1000 / steps,
             "share": e.self_cpu_time_total / total, "calls": e.count // steps} for e in events[:top]]
    convolution = sum(e.self_cpu_time_total for e in events if "convolution" in e.key)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"total_ms": total / 1000 / steps, "convolution_ms": convolution / 1000 / steps,
            "step_ms": 1000 * statistics.median(times), "precision": "bf16" if use_amp else "float32",
            "second_order": second_order.DESCRIPTION if fast else "autograd", "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="gradresnet")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--top", type=int, default=12)
    p.add_argument("--default-loss", action="store_true",
                   help="the loss cdn train builds for the model gradresnet (cross-entropy on the clean image too)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    import torch

    from cdn.provenance import device_description, git_commit
    from cdn.train import tune_allocator

    allocator = tune_allocator()  # as cdn train sets it
    out = {"command": "python -m benchmarks.profile " + " ".join(argv if argv is not None else sys.argv[1:]),
           "commit": git_commit(), "machine": device_description("cpu"), "torch": torch.__version__,
           "arch": a.arch, "width": a.width, "batch": a.batch, "size": a.size, "steps": a.steps,
           "loss": "default (cdn.train.make_loss)" if a.default_loss else "JointLoss() (first settings)",
           "allocator": allocator}
    for name, reference in (("train_step", False), ("reference", True)):
        out[name] = profile_step(a.arch, a.width, a.batch, a.size, a.steps, reference, a.top,
                                 default_loss=a.default_loss)
        print(f"{name}: {out[name]['total_ms']:.0f} ms of self time per step, {out[name]['convolution_ms']:.0f} ms "
              f"in convolutions; {out[name]['step_ms']:.0f} ms a step unprofiled ({out[name]['precision']}, "
              f"{out[name]['second_order']})")
        for r in out[name]["rows"]:
            print(f"  {r['operator'][:45]:<45} {r['self_ms']:8.1f} ms {100 * r['share']:5.1f}%  x{r['calls']}")
    return write_result(out, a.out)


if __name__ == "__main__":
    main()
