"""The benchmark runs in a tiny setting and writes well-formed JSON (timings are reported, never asserted)."""
import json

from benchmarks.__main__ import main, summary


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--smoke", "--device", "cpu", "--cases", "gradresnet-ce", "gradresnet-joint", "jem-k5",
                   "data-fast", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    names = [r["case"] for r in data["rows"]]
    assert names == ["gradresnet-ce", "gradresnet-joint", "jem-k5", "data-fast"]
    for r in data["rows"]:
        assert r["seconds_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
        assert (r["width"], r["batch"], r["size"]) == (2, 4, 8)
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
