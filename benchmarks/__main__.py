"""Time per training step, images per second and peak memory of every objective at the same width,
batch and image size, as ratios to the cross-entropy GradResNet step (chapter "Efficiency").

    python -m benchmarks [--width 16] [--batch 64] [--size 32] [--reps 5] [--out results/bench-cpu.json]

Each configuration runs in its own process so that its peak memory (CPU: peak resident set size;
GPU: torch.cuda.max_memory_allocated) is its own. Times are medians over ``reps`` steps after two
warm-up steps. The JEM-style step costs K SGLD steps (one forward and backward through the input
each) plus the contrastive forward/backward, as in Grathwohl et al. (2019); it measures cost only.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

CASES = [  # name, architecture, objective
    ("gradresnet-ce", "gradresnet", "ce"),
    ("gradresnet-joint", "gradresnet", "joint"),
    ("resnet18-ce", "resnet18", "ce"),
    ("unet-mse", "unet", "mse"),
    ("jem-sgld-k5", "gradresnet", "jem5"),
    ("jem-sgld-k20", "gradresnet", "jem20"),
    ("classify-forward", "gradresnet", "infer_classify"),
    ("denoise-forward-backward", "gradresnet", "infer_denoise"),
]


def _one(args) -> dict:
    name, arch, objective, width, batch, size, reps, device = args
    import torch

    from cdn.joint import JointModel
    from cdn.losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss
    from cdn.nets import build_net

    torch.manual_seed(0)
    dev = torch.device(device)
    net = build_net(arch, 10, 3, width).to(dev)
    model = JointModel(net)
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x = torch.rand(batch, 3, size, size, device=dev)
    c = torch.randint(0, 10, (batch,), device=dev)

    def step():
        if objective.startswith("infer"):
            with torch.no_grad():
                if objective == "infer_classify":
                    model.classify(x)
                else:
                    model.denoise(x, 0.1)
            return
        if objective == "ce":
            loss, _ = CrossEntropyLoss()(model, x, c)
        elif objective == "joint":
            loss, _ = JointLoss()(model, x, c)
        elif objective == "mse":
            loss, _ = DenoisingMSELoss()(net, x)
        else:  # JEM: K SGLD steps from noise, then CE + contrastive energy loss
            k = int(objective[3:])
            xs = torch.rand_like(x) * 2 - 1
            for _ in range(k):
                g = model.score(xs)
                xs = (xs + 1.0 * g + 0.01 * torch.randn_like(xs)).detach()
            ce, _ = CrossEntropyLoss()(model, x, c)
            loss = ce - model.log_marginal(x).mean() + model.log_marginal(xs).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    mem = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"case": name, "seconds_per_step": med, "images_per_s": batch / med, "peak_memory_mib": mem,
            "memory_kind": "cuda max_memory_allocated" if dev.type == "cuda" else "peak RSS of the process"}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--cases", nargs="*", default=None, help="only these cases (default: all)")
    p.add_argument("--out", default=None, help="write the table as JSON here")
    a = p.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    ctx = mp.get_context("spawn")
    rows = []
    cases = [c for c in CASES if a.cases is None or c[0] in a.cases]
    unknown = set(a.cases or []) - {c[0] for c in CASES}
    if unknown:
        raise SystemExit(f"unknown cases {sorted(unknown)}; known: {', '.join(c[0] for c in CASES)}")
    for name, arch, obj in cases:
        with ctx.Pool(1) as pool:
            rows.append(pool.apply(_one, ((name, arch, obj, a.width, a.batch, a.size, a.reps, device),)))
        print(f"{rows[-1]['case']:<26} {rows[-1]['seconds_per_step']*1000:9.1f} ms  "
              f"{rows[-1]['images_per_s']:8.1f} img/s  {rows[-1]['peak_memory_mib']:8.0f} MiB", flush=True)
    base = rows[0]["seconds_per_step"]
    for r in rows:
        r["time_ratio_to_gradresnet_ce"] = r["seconds_per_step"] / base
    result = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "width": a.width, "batch": a.batch, "size": a.size, "reps": a.reps, "rows": rows}
    print("\nratio of time per step to the cross-entropy GradResNet step:")
    for r in rows:
        print(f"  {r['case']:<26} x{r['time_ratio_to_gradresnet_ce']:.2f}")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
