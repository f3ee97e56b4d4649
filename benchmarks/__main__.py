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
from pathlib import Path

from benchmarks.cases import CASES, _one



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
