"""The benchmark runs in a tiny setting and writes well-formed JSON (timings are reported, never asserted)."""
import json
import os

import pytest

from benchmarks.__main__ import main, summary


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--smoke", "--device", "cpu", "--cases", "gradresnet-ce", "gradresnet-joint",
                   "gradresnet-joint-reference", "matmul-float32", "jem-k5", "data-fast", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    names = [r["case"] for r in data["rows"]]
    assert names == ["gradresnet-ce", "gradresnet-joint", "gradresnet-joint-reference", "matmul-float32", "jem-k5",
                     "data-fast"]
    for r in data["rows"]:
        if r["case"] != "matmul-float32":
            assert r["seconds_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
        assert (r["width"], r["batch"], r["size"]) == (2, 4, 8)
    assert data["command"].startswith("python -m benchmarks --smoke") and data["machine"].startswith("cpu (")
    # the roofline: the step cdn train runs beside the float32 autograd reference (the closed-form second
    # derivatives are off in the tests, conftest; tests/test_second_order.py trains with them), their FLOPs
    # (the same convolutions) and fractions of the matrix-product peak timed in the same run
    rows = {r["case"]: r for r in data["rows"]}
    fast, ref, mm = rows["gradresnet-joint"], rows["gradresnet-joint-reference"], rows["matmul-float32"]
    assert fast["second_order"] == ref["second_order"] == "autograd" and ref["precision"] == "float32"
    assert fast["gflop_per_step"] == ref["gflop_per_step"] > rows["gradresnet-ce"]["gflop_per_step"] > 0
    assert mm["gflops"] == pytest.approx(2 * 2048 ** 3 / mm["seconds_per_step"] / 1e9)
    s = data["summary"]
    assert s["joint_reference_over_joint"] == ref["seconds_per_step"] / fast["seconds_per_step"]
    assert s["fraction_of_peak"]["gradresnet-joint-reference"] == ref["gflops"] / s["peak_gflops"]["float32"]
    assert data["rows"][0]["time_ratio_to_gradresnet_ce"] == 1.0
    t = {r["case"]: r["seconds_per_step"] for r in data["rows"]}
    assert data["summary"]["joint_over_ce"] == t["gradresnet-joint"] / t["gradresnet-ce"]
    assert data["summary"]["data_fast_fraction_of_joint_step"] == t["data-fast"] / t["gradresnet-joint"]
    assert data["summary"]["jem_k20_over_joint"] is None  # not run


def test_sweep_rows_cover_the_grid(tmp_path):
    out = tmp_path / "sweep.json"
    main(["--sweep", "--device", "cpu", "--widths", "2", "--batches", "2", "4", "--size", "8", "--reps", "1",
          "--cases", "gradresnet-ce", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["kind"] == "sweep"
    assert [(r["width"], r["batch"]) for r in data["rows"]] == [(2, 2), (2, 4)]


def test_summary_reports_a_failed_compile():
    rows = [{"case": "gradresnet-joint", "seconds_per_step": 2.0},
            {"case": "gradresnet-joint-compiled", "compile": True, "seconds_per_step": None, "error": "E",
             "first_step_s": 3.0}]
    assert summary(rows)["compile gradresnet-joint"] == {"error": "E", "seconds_before_failure": 3.0}


def test_precision_cases_time_each_step_in_float32_and_bf16(tmp_path):
    out = tmp_path / "precision.json"
    main(["--precision", "--smoke", "--device", "cpu", "--cases", "gradresnet-ce-float32", "gradresnet-joint-float32",
          "gradresnet-ce-bf16", "gradresnet-joint-bf16", "--out", str(out)])
    data = json.loads(out.read_text())
    rows = {r["case"]: r for r in data["rows"]}
    assert rows["gradresnet-joint-bf16"]["precision"] == "bf16" and rows["gradresnet-joint-float32"]["precision"] == "float32"
    assert all(r["seconds_per_step"] > 0 for r in rows.values())
    t = {k: r["seconds_per_step"] for k, r in rows.items()}
    s = data["summary"]
    assert s["joint_over_ce_bf16"] == t["gradresnet-joint-bf16"] / t["gradresnet-ce-bf16"]
    assert s["bf16_over_float32 gradresnet-joint"] == t["gradresnet-joint-bf16"] / t["gradresnet-joint-float32"]
    assert s["bf16_over_float32 unet-mse"] is None  # not run
    assert isinstance(data["cpu_has_fast_bf16"], bool)


def test_the_profile_lists_operators_by_self_time(tmp_path):
    from benchmarks.profile import main as profile_main

    out = tmp_path / "profile.json"
    data = profile_main(["--width", "2", "--batch", "4", "--size", "8", "--steps", "1", "--top", "5", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    ref = data["reference"]
    assert ref["precision"] == "float32" and ref["second_order"] == "autograd" and len(ref["rows"]) == 5
    shares = [r["share"] for r in ref["rows"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
    assert data["train_step"]["second_order"] == "autograd"  # CDN_SECOND_ORDER=off in the tests
    for part in (ref, data["train_step"]):  # the convolutions' self time is part of the total; a step takes time
        assert 0 < part["convolution_ms"] < part["total_ms"] and part["step_ms"] > 0
    conv_rows = [r for r in ref["rows"] if "convolution" in r["operator"]]
    assert ref["convolution_ms"] >= sum(r["self_ms"] for r in conv_rows) - 1e-9


def test_the_profile_takes_the_default_loss(tmp_path):
    from benchmarks.profile import main as profile_main

    def convolution_calls(argv):  # every operator listed, so the convolution kernels' calls can be counted
        data = profile_main(["--width", "2", "--batch", "4", "--size", "8", "--steps", "1", "--top", "1000"] + argv)
        return data, sum(r["calls"] for r in data["reference"]["rows"] if "convolution" in r["operator"])

    default, with_clean = convolution_calls(["--default-loss"])
    first, noisy_only = convolution_calls([])
    assert default["loss"].startswith("default") and first["loss"].startswith("JointLoss")
    assert with_clean > noisy_only  # the default's cross-entropy on the clean image: one more forward and backward


def test_the_paired_benchmark_interleaves_the_variants_and_takes_ratios_within_rounds(tmp_path):
    from benchmarks.paired import VARIANTS, main as paired_main

    out = tmp_path / "paired.json"
    data = paired_main(["--width", "2", "--batch", "4", "--size", "8", "--rounds", "3", "--warmup", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert set(data["seconds"]) == set(VARIANTS) and all(len(s) == 3 and min(s) > 0 for s in data["seconds"].values())
    assert data["over_reference"]["reference"] == 1.0 and data["over_ce"]["ce"] == 1.0
    s = data["seconds"]  # the median of the per-round ratios, not the ratio of the medians
    assert data["over_ce"]["reference"] == sorted(a / b for a, b in zip(s["reference"], s["ce"]))[1]
    assert data["loss"] == "default" and data["allocator"] != ""
    with pytest.raises(ValueError, match="loss must be"):
        __import__("benchmarks.paired").paired.paired_times(loss="both")


def test_the_data_parallel_benchmark_times_one_and_two_processes_on_the_same_global_batch(tmp_path):
    from benchmarks.data_parallel import main as dp_main, time_configuration

    out = tmp_path / "dp.json"
    data = dp_main(["--width", "2", "--batch", "8", "--size", "8", "--processes", "2", "--rounds", "2", "--warmup", "1",
                    "--repeats", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(data))
    assert set(data["seconds"]) == {"1 process x %d threads" % len(os.sched_getaffinity(0)), "2 processes x 1 thread"}
    for runs in data["seconds"].values():
        assert all(len(s) == 2 and min(s) > 0 for s in runs.values())
    one, many = data["median_s"].values()
    assert data["summary"]["one_process_over_processes_train_step"] == one["train_step"] / many["train_step"]
    with pytest.raises(ValueError, match="divisible"):
        time_configuration(3, 1, batch=8)


def _fake_run(folder, accuracies, psnrs, n=200, test="CIFAR-10 JPEG copy, subset of 200"):
    folder.mkdir(parents=True)
    metrics = {"run": folder.name, "train_time_s": 100.0, "key": {"test": test, "n": n},
               "classification": [{"sigma": s, "accuracy": a} for s, a in zip((0.0, 0.1), accuracies)],
               "denoising": [{"sigma": 0.1, "noisy": 20.0, "D(y)": p, "D(y,c)": p, "D(y,wrong c)": p} for p in psnrs]}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "state.json").write_text(json.dumps({"machine": "cpu (test)", "commit": "abc", "autocast": "float32",
                                                   "second_order": "autograd"}))
    return folder


def test_the_training_check_compares_two_runs_against_the_standard_error(tmp_path):
    from benchmarks.training_check import compare, main as check_main

    fast = _fake_run(tmp_path / "on" / "run-a", (0.50, 0.40), (26.0,))
    ref = _fake_run(tmp_path / "off" / "run-a", (0.48, 0.43), (25.5,))
    result = compare(fast, ref)
    assert result["largest_accuracy_difference"] == pytest.approx(0.03)
    se = (2 * 0.415 * 0.585 / 200) ** 0.5  # sigma = 0.1: p = (0.40 + 0.43) / 2
    assert result["accuracy"][1]["standard_error"] == pytest.approx(se)
    assert result["largest_accuracy_difference_in_standard_errors"] == pytest.approx(0.03 / se)
    assert result["largest_psnr_difference_db"] == pytest.approx(0.5)
    out = tmp_path / "check.json"
    check_main([str(fast), str(ref), "--out", str(out)])
    written = json.loads(out.read_text())
    assert str(tmp_path) not in written["command"]  # runs by name, not by this machine's paths
    other = _fake_run(tmp_path / "other", (0.5, 0.4), (26.0,), test="another subset")
    with pytest.raises(ValueError, match="different images"):
        compare(fast, other)
    with pytest.raises(FileNotFoundError, match="finished and evaluated run"):
        compare(tmp_path / "missing", ref)
