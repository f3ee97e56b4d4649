"""The cache of chapter results (cdn.report.cached_json): computed once per key, recomputed when
anything in the key changes, including the bytes of a file digested into it."""
from cdn import report


def test_cached_json_computes_once_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CDN_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights v1")
    calls = []

    def compute():
        calls.append(1)
        return {"curve": [1.0, 0.5], "n": len(calls)}

    key = {"run": "r1", "weights": report.file_digest(weights), "sizes": {"steps": 10}}
    first = report.cached_json("robustness-test", key, compute)
    assert report.cached_json("robustness-test", dict(key), compute) == first == {"curve": [1.0, 0.5], "n": 1}
    assert len(calls) == 1
    assert report.cached_json("robustness-test", {**key, "sizes": {"steps": 20}}, compute)["n"] == 2
    weights.write_bytes(b"weights v2")
    assert report.cached_json("robustness-test", {**key, "weights": report.file_digest(weights)}, compute)["n"] == 3
    assert len(list((tmp_path / "cache" / "chapters").glob("robustness-test-*.json"))) == 3
