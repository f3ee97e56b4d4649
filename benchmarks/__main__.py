"""Time per training step, images per second and peak memory of every objective at the same width,
batch and image size, as ratios to the cross-entropy GradResNet step (chapter "Efficiency").

    python -m benchmarks [--width 16] [--batch 64] [--size 32] [--reps 5] [--out results/bench-cpu-2core.json]
    python -m benchmarks --smoke [--out FILE]           tiny sizes, a few cases: seconds
    python -m benchmarks --sweep [--widths 8 16 32] [--batches 32 64 128] [--out results/bench-sweep-cpu-2core.json]
    python -m benchmarks --precision [--batch 128] [--out results/bench-precision-cpu.json]   float32 and bf16
    python -m benchmarks --roofline [--batch 128] [--out results/bench-roofline-MACHINE-2core.json]   FLOPs, peak, speed-up

Each configuration runs in its own process so that its peak memory (CPU: peak resident set size;
GPU: torch.cuda.max_memory_allocated) is its own. Times are medians over ``reps`` steps after two
warm-up steps (the first one, compilation included for compiled cases, is reported as
``first_step_s``). The training cases time ``cdn.train.train_step``, the step ``cdn train`` runs
(``-reference``: plain float32 autograd), and report the FLOPs of one step (``gflop_per_step``, matrix
products and convolutions counted by ``cdn.experiments.efficiency.step_flops``) and the rate reached (``gflops``);
the ``matmul`` cases measure the machine's attainable peak in the same run, and the summary gives each
training case's fraction of it. The JEM cases time one update of ``cdn.experiments.jem.JEMTrainer`` (K
SGLD steps from its replay buffer, then the loss). The summary holds the ratios the issues' goals are
stated in.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import sys

from benchmarks import write_result
from benchmarks.cases import CASES, PRECISION_CASES, ROOFLINE_CASES, _one

SMOKE_CASES = ["gradresnet-ce", "gradresnet-joint", "jem-k5", "data-fast", "data-plain"]
SWEEP_CASES = ["gradresnet-ce", "gradresnet-joint"]


def _run(cases, width, batch, size, reps, device, verbose=True) -> list[dict]:
    ctx = mp.get_context("spawn")
    rows = []
    for name, arch, obj, options in cases:
        with ctx.Pool(1) as pool:
            row = pool.apply(_one, ((name, arch, obj, options, width, batch, size, reps, device),))
        row.update(width=width, batch=batch, size=size)
        rows.append(row)
        if verbose:
            if row.get("error"):
                print(f"{name:<28} FAILED: {row['error']}", flush=True)
            elif obj == "matmul":
                print(f"{name:<28} {row['seconds_per_step'] * 1000:9.1f} ms  {row['gflops']:8.1f} GFLOP/s", flush=True)
            else:
                print(f"{name:<28} {row['seconds_per_step'] * 1000:9.1f} ms  {row['images_per_s']:8.1f} img/s  "
                      f"{row['peak_memory_mib']:8.0f} MiB  (first step {row['first_step_s']:.1f} s)", flush=True)
    return rows


def _time(rows, case):
    for r in rows:
        if r["case"] == case and r.get("seconds_per_step"):
            return r["seconds_per_step"]
    return None


def summary(rows: list[dict]) -> dict:
    """The ratios of the issue's goals, from the rows present: joint / CE step, JEM / joint step,
    data loading (fast and plain path) as a fraction of a joint step, 1-thread / 2-thread step time,
    and the ``torch.compile`` outcome per objective (None where a case is missing)."""
    t = {r["case"]: _time(rows, r["case"]) for r in rows}

    def ratio(a, b):
        return t[a] / t[b] if t.get(a) and t.get(b) else None

    out = {"joint_over_ce": ratio("gradresnet-joint", "gradresnet-ce"),
           "joint_reference_over_joint": ratio("gradresnet-joint-reference", "gradresnet-joint"),
           "joint_reference_over_ce_reference": ratio("gradresnet-joint-reference", "gradresnet-ce-reference"),
           "jem_k20_over_joint": ratio("jem-k20", "gradresnet-joint"),
           "jem_k5_over_joint": ratio("jem-k5", "gradresnet-joint"),
           "data_fast_fraction_of_joint_step": ratio("data-fast", "gradresnet-joint"),
           "data_plain_fraction_of_joint_step": ratio("data-plain", "gradresnet-joint"),
           "ce_1thread_over_default": ratio("gradresnet-ce-1thread", "gradresnet-ce"),
           "joint_1thread_over_default": ratio("gradresnet-joint-1thread", "gradresnet-joint"),
           "joint_over_ce_bf16": ratio("gradresnet-joint-bf16", "gradresnet-ce-bf16")}
    for case in ("gradresnet-ce", "gradresnet-joint", "resnet18-ce", "unet-mse"):
        out[f"bf16_over_float32 {case}"] = ratio(f"{case}-bf16", f"{case}-float32")
    peak = {r["dtype"]: r["gflops"] for r in rows if r.get("objective") == "matmul" and r.get("gflops")}
    if peak:
        out["peak_gflops"] = peak
        out["fraction_of_peak"] = {r["case"]: r["gflops"] / peak[{"bf16": "bfloat16"}.get(r["precision"], "float32")]
                                   for r in rows if r.get("gflops") and r.get("precision")
                                   and {"bf16": "bfloat16"}.get(r["precision"], "float32") in peak}
    for r in rows:
        if r.get("compile"):
            eager = r["case"].replace("-compiled", "")
            out[f"compile {eager}"] = ({"error": r["error"], "seconds_before_failure": r["first_step_s"]}
                                       if r.get("error") else
                                       {"first_step_s": r["first_step_s"], "compiled_over_eager": ratio(r["case"], eager)})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--cases", nargs="*", default=None, help="only these cases (default: all)")
    p.add_argument("--smoke", action="store_true", help=f"width 2, batch 4, 8x8 images, 1 rep, cases {SMOKE_CASES}")
    p.add_argument("--sweep", action="store_true", help=f"time {SWEEP_CASES} over --widths x --batches")
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--batches", type=int, nargs="+", default=[32, 64, 128])
    p.add_argument("--precision", action="store_true", help=f"each training step in float32 and bf16: {PRECISION_CASES}")
    p.add_argument("--roofline", action="store_true", help=f"FLOPs, images/s and fraction of peak: {ROOFLINE_CASES}")
    p.add_argument("--out", default=None, help="write the result as JSON here")
    a = p.parse_args(argv)
    import torch

    from cdn.train import cpu_has_fast_bf16

    if a.smoke:
        a.width, a.batch, a.size, a.reps = 2, 4, 8, 1
        a.cases = a.cases or SMOKE_CASES
        a.widths, a.batches = [2], [4]
    known = [c[0] for c in CASES]
    wanted = a.cases if a.cases is not None else (SWEEP_CASES if a.sweep else PRECISION_CASES if a.precision
                                                     else ROOFLINE_CASES if a.roofline else known)
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; known: {', '.join(known)}")
    cases = [c for c in CASES if c[0] in wanted]
    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from cdn.provenance import device_description, git_commit

    result = {"device": device if device == "cpu" else torch.cuda.get_device_name(), "torch": torch.__version__,
              "cpu": platform.processor() or platform.machine(), "machine": device_description(device),
              "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
              "commit": git_commit(), "threads": torch.get_num_threads(),
              "size": a.size, "reps": a.reps, "cpu_has_fast_bf16": cpu_has_fast_bf16()}
    if a.sweep:
        rows = []
        for w in a.widths:
            for b in a.batches:
                rows += _run(cases, w, b, a.size, a.reps, device)
        result.update(kind="sweep", widths=a.widths, batches=a.batches, rows=rows)
    else:
        rows = _run(cases, a.width, a.batch, a.size, a.reps, device)
        base = _time(rows, "gradresnet-ce")
        for r in rows:
            r["time_ratio_to_gradresnet_ce"] = (r["seconds_per_step"] / base if base and r["seconds_per_step"]
                                                and r["objective"] != "matmul" else None)
        result.update(kind="table", width=a.width, batch=a.batch, rows=rows, summary=summary(rows))
        print("\nratio of time per step to the cross-entropy GradResNet step:")
        for r in rows:
            ratio = r["time_ratio_to_gradresnet_ce"]
            print(f"  {r['case']:<28} " + (f"x{ratio:.2f}" if ratio is not None else "-"))
        print("\nsummary:", json.dumps(result["summary"], indent=1))
    return write_result(result, a.out)


if __name__ == "__main__":
    main()
