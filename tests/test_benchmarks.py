"""The benchmark runs in a tiny setting and writes well-formed JSON (timings are reported, never asserted)."""
import json

from benchmarks.__main__ import main


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = main(["--width", "2", "--batch", "4", "--size", "8", "--reps", "1", "--device", "cpu",
                   "--cases", "gradresnet-ce", "gradresnet-joint", "jem-sgld-k5", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(result))
    names = [r["case"] for r in data["rows"]]
    assert names == ["gradresnet-ce", "gradresnet-joint", "jem-sgld-k5"]
    for r in data["rows"]:
        assert r["seconds_per_step"] > 0 and r["images_per_s"] > 0 and r["peak_memory_mib"] > 0
    assert data["rows"][0]["time_ratio_to_gradresnet_ce"] == 1.0
