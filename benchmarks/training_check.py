"""Does the fast training step change what a trained model does? Two finished runs of one configuration,
one trained with the closed-form second derivatives (``CDN_SECOND_ORDER=on``) and one with PyTorch's
(``CDN_SECOND_ORDER=off``), compared on their evaluation (``metrics.json``): accuracy at every sigma with its
binomial standard error, and the PSNR of D(y), D(y, c) and D(y, wrong c).

    CDN_RUNS=RUNS_ON  CDN_SECOND_ORDER=on  python -m cdn train --profile quick --model gradresnet --no-progress --retrain
    CDN_RUNS=RUNS_OFF CDN_SECOND_ORDER=off python -m cdn train --profile quick --model gradresnet --no-progress --retrain
    python -m benchmarks.training_check RUNS_ON/RUN RUNS_OFF/RUN --out results/second-order-quick-check.json

(two folders of runs, since both runs have the same configuration and so the same name).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

PSNR_COLUMNS = ("D(y)", "D(y,c)", "D(y,wrong c)")


def _read(run_dir: Path) -> dict:
    metrics, state = (run_dir / "metrics.json", run_dir / "state.json")
    for f in (metrics, state):
        if not f.is_file():
            raise FileNotFoundError(f"{f} is missing: expected a finished and evaluated run directory (cdn train)")
    m, s = json.loads(metrics.read_text()), json.loads(state.read_text())
    return {"run": m["run"], "machine": s.get("machine"), "commit": s.get("commit"), "precision": s.get("autocast"),
            "second_order": s.get("second_order"), "train_time_s": m["train_time_s"], "test": m["key"]["test"],
            "test_images": m["key"]["n"],
            "classification": m["classification"], "denoising": m["denoising"]}


def compare(fast_dir: Path, reference_dir: Path) -> dict:
    """Both runs' evaluations and, per sigma, ``|acc_fast - acc_ref|`` against the standard error of the
    difference of two accuracies on n images, ``sqrt(2 p (1 - p) / n)``, and the largest PSNR difference (dB)."""
    fast, ref = _read(Path(fast_dir)), _read(Path(reference_dir))
    if fast["test"] != ref["test"]:
        raise ValueError(f"the runs were evaluated on different images: {fast['test']!r} and {ref['test']!r}")
    n = fast["test_images"]
    accuracy = []
    for a, b in zip(fast["classification"], ref["classification"], strict=True):
        p = (a["accuracy"] + b["accuracy"]) / 2
        accuracy.append({"sigma": a["sigma"], "fast": a["accuracy"], "reference": b["accuracy"],
                         "difference": a["accuracy"] - b["accuracy"],
                         "standard_error": math.sqrt(2 * p * (1 - p) / n)})
    psnr = [{"sigma": a["sigma"], **{k: a[k] - b[k] for k in PSNR_COLUMNS}}
            for a, b in zip(fast["denoising"], ref["denoising"], strict=True)]
    return {"fast": fast, "reference": ref, "test_images": n, "accuracy": accuracy, "psnr_difference_db": psnr,
            "largest_accuracy_difference": max(abs(r["difference"]) for r in accuracy),
            "largest_accuracy_difference_in_standard_errors": max(abs(r["difference"]) / r["standard_error"]
                                                                  for r in accuracy),
            "largest_psnr_difference_db": max(abs(r[k]) for r in psnr for k in PSNR_COLUMNS),
            "speed_up_of_training": ref["train_time_s"] / fast["train_time_s"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("fast", help="the run trained with the closed-form second derivatives")
    p.add_argument("reference", help="the same configuration trained with PyTorch's")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    # the runs by name, not by this machine's paths
    command = f"python -m benchmarks.training_check RUNS_ON/{Path(a.fast).name} RUNS_OFF/{Path(a.reference).name}"
    result = {"command": command,
              **compare(Path(a.fast), Path(a.reference))}
    text = json.dumps(result, indent=1)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
