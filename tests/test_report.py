"""The cache of chapter results (cdn.book.chapter.cached_json): computed once per key, recomputed when
anything in the key changes, including the bytes of a file digested into it."""
import pytest

from cdn.book import chapter
from cdn.experiments import classical
from cdn import provenance


def test_cached_json_computes_once_per_key(tmp_path, monkeypatch):
    monkeypatch.setenv("CDN_CACHE", str(tmp_path / "cache"))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"weights v1")
    calls = []

    def compute():
        calls.append(1)
        return {"curve": [1.0, 0.5], "n": len(calls)}

    key = {"run": "r1", "weights": chapter.file_digest(weights), "sizes": {"steps": 10}}
    first = chapter.cached_json("robustness-test", key, compute)
    assert chapter.cached_json("robustness-test", dict(key), compute) == first == {"curve": [1.0, 0.5], "n": 1}
    assert len(calls) == 1
    assert chapter.cached_json("robustness-test", {**key, "sizes": {"steps": 20}}, compute)["n"] == 2
    weights.write_bytes(b"weights v2")
    assert chapter.cached_json("robustness-test", {**key, "weights": chapter.file_digest(weights)}, compute)["n"] == 3
    assert len(list((tmp_path / "cache" / "chapters").glob("robustness-test-*.json"))) == 3


def test_committed_results_lists_paper_runs_only(tmp_path):
    from cdn.book.chapter import committed_results, load_result

    assert committed_results(tmp_path / "missing") == []
    (tmp_path / "bench-cpu-2core.json").write_text('{"rows": []}')  # a CPU benchmark: not a GPU result
    run = tmp_path / "paper-cifar10"
    (run / "logs").mkdir(parents=True)
    (run / "per_sigma.csv").write_text("sigma,accuracy\n0.0,0.9\n0.1,0.8\n")
    (run / "logs" / "metrics.json").write_text('[{"a": 1}]')
    (run / "RUN.md").write_text("notes")
    assert committed_results(tmp_path) == [run / "logs" / "metrics.json", run / "per_sigma.csv"]
    assert load_result(run / "per_sigma.csv")["accuracy"].tolist() == [0.9, 0.8]


def test_chapter_summaries_round_trip(tmp_path, monkeypatch):
    import pandas as pd
    import pytest

    from cdn.book.chapter import load_summaries, save_summary

    monkeypatch.setenv("CDN_CACHE", str(tmp_path))
    table = pd.DataFrame({"Linf 2/255": [0.275, 0.145]}, index=["joint", "ce"])
    save_summary("robustness", "quick", table, "Robust accuracy", "CIFAR-10")
    save_summary("efficiency", "quick", pd.DataFrame({"ratio": [3.3]}, index=["joint/CE"]), "Cost")
    got = load_summaries("quick")
    assert [r["name"] for r in got] == ["efficiency", "robustness"] and load_summaries("smoke") == []
    pd.testing.assert_frame_equal(got[1]["frame"], table)
    assert got[1]["caption"] == "Robust accuracy" and got[1]["data"] == "CIFAR-10"
    with pytest.raises(ValueError, match="profile must be one of smoke, quick, cpu, paper"):
        save_summary("x", "fast", table, "")


def test_bm3d_reference_denoises_and_sees_the_same_images_as_the_networks():
    """BM3D told the true sigma beats the noisy input on smooth images (colour and grey), returns the
    input at sigma = 0, and ``random_images`` is the same seeded sample each time."""
    import pytest
    import torch

    from cdn.data import make_synthetic
    from cdn.evaluate import psnr

    pytest.importorskip("bm3d")
    ds = make_synthetic("test", size=16, n=8)
    sample = chapter.random_images(ds, 2, seed=3)
    again = chapter.random_images(ds, 2, seed=3)
    assert torch.equal(sample.images, again.images) and len(sample) == 2 and "2 random images" in sample.source
    x = sample.to_float()
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    denoise = classical.bm3d_denoiser()
    d = denoise(y, 0.1)
    assert d.shape == y.shape and d.dtype == y.dtype
    assert (psnr(d, x) > psnr(y, x) + 3).all()  # several dB better than the noisy input
    grey = denoise(y[:, :1], 0.1)
    assert grey.shape == (2, 1, 16, 16) and (psnr(grey, x[:, :1]) > psnr(y[:, :1], x[:, :1])).all()
    assert denoise(y, 0.0) is y


def test_the_provenance_box_names_the_data_by_file_and_checksum_not_by_path(tmp_path, monkeypatch):
    import hashlib

    data = tmp_path / "machine-specific" / "data"
    data.mkdir(parents=True)
    (data / "cifar10-test.tar.gz").write_bytes(b"not really CIFAR-10")
    monkeypatch.setenv("CDN_DATA", str(data))
    provenance._data_file_sha256.cache_clear()
    facts = chapter.provenance(f"CIFAR-10 JPEG copy ({data / 'cifar10-test.tar.gz'}), subset of 2000", "quick")
    digest = hashlib.sha256(b"not really CIFAR-10").hexdigest()[:12]
    assert facts["data"] == f"CIFAR-10 JPEG copy (cifar10-test.tar.gz, sha256 {digest}), subset of 2000"
    assert str(tmp_path) not in chapter.provenance_markdown(f"x ({data / 'cifar10-test.tar.gz'})", "quick")
    # a file the data folders do not hold keeps its name, without a checksum; other sources are unchanged
    assert provenance.described_data("x (/elsewhere/gone.tar.gz)") == "x (gone.tar.gz)"
    assert provenance.described_data("scikit-learn digits (load_digits)") == "scikit-learn digits (load_digits)"
    provenance._data_file_sha256.cache_clear()


def test_the_benchmark_and_roofline_tables_read_the_benchmark_files():
    import json

    from cdn.book import tables
    from cdn.data import REPO_ROOT

    bench = json.loads((REPO_ROOT / "results" / "bench-cpu-2core.json").read_text())
    t = tables.benchmark_table(bench)
    assert len(t) == len(bench["rows"]) and "÷ CE GradResNet step" in t.columns
    assert str(bench["threads"]) in tables.benchmark_caption(bench)
    for path in sorted((REPO_ROOT / "results").glob("bench-roofline-*.json")):
        roof = json.loads(path.read_text())
        rt = tables.roofline_table(roof)
        assert "matmul-float32" not in rt.index and "gradresnet-joint" in rt.index
        q = tables.roofline_ratios(roof)
        t_ref = {r["case"]: r["seconds_per_step"] for r in roof["rows"]}
        assert q["speedup"] == roof["summary"]["joint_reference_over_joint"]
        assert abs(q["speedup"] - t_ref["gradresnet-joint-reference"] / t_ref["gradresnet-joint"]) < 1e-9
        assert q["float32_ceiling"] >= 1.0
        g = {r["case"]: r.get("gflop_per_step") for r in roof["rows"]}
        assert q["flop_ratio"] == pytest.approx(g["gradresnet-joint"] / g["gradresnet-ce"])
        same = [t_ref[c] for c in tables.SAME_STEP if c in t_ref]
        if "same_step_spread" in q:
            assert q["same_step_spread"] == pytest.approx(max(same) / min(same) - 1)
        assert q.get("bf16_fraction", 0.0) <= 1.0


def test_result_json_reads_from_the_results_folder_and_names_what_is_missing(tmp_path):
    from cdn.book import chapter

    (tmp_path / "bench-a.json").write_text('{"x": 1}')
    (tmp_path / "bench-b.json").write_text('{"x": 2}')
    (tmp_path / "other.json").write_text('{"x": 3}')
    assert chapter.result_json("bench-a.json", tmp_path) == {"x": 1}
    assert chapter.result_jsons("bench-*.json", tmp_path) == {"bench-a.json": {"x": 1}, "bench-b.json": {"x": 2}}
    assert chapter.result_jsons("none-*.json", tmp_path) == {}
    with pytest.raises(FileNotFoundError, match="missing.json"):
        chapter.result_json("missing.json", tmp_path)


def test_operator_shares_split_a_profile_by_kind():
    from cdn.book.tables import operator_shares

    part = {"rows": [{"operator": "aten::convolution_backward", "share": 0.3},
                     {"operator": "aten::mkldnn_convolution", "share": 0.2},
                     {"operator": "aten::mul", "share": 0.1}, {"operator": "aten::add_", "share": 0.05},
                     {"operator": "## Call CompiledFxGraph abc ##", "share": 0.1},
                     {"operator": "aten::native_group_norm_backward", "share": 0.05}]}
    shares = operator_shares(part)
    assert shares["convolutions"] == pytest.approx(0.5) and shares["elementwise"] == pytest.approx(0.15)
    assert shares["compiled"] == pytest.approx(0.1) and shares["rest"] == pytest.approx(0.25)


def test_convolution_floor_bounds_the_speedup_by_the_convolutions_alone():
    from cdn.book.tables import convolution_floor

    prof = {"train_step": {"step_ms": 1600.0, "convolution_ms": 1000.0},
            "reference": {"step_ms": 1800.0, "convolution_ms": 900.0}}
    floor = convolution_floor(prof)
    assert floor["ceiling"] == pytest.approx(1.8) and floor["speedup"] == pytest.approx(1.125)
    assert floor["ceiling"] < 2  # a factor 2 over autograd is out of reach with these kernels
    assert convolution_floor({"train_step": {"convolution_ms": 1.0}, "reference": {}}) is None  # an older file


def test_compile_table_pairs_each_step_with_its_compiled_case():
    import pandas as pd

    from cdn.book.tables import compile_table

    bench = {"rows": [{"case": "gradresnet-ce", "seconds_per_step": 0.1},
                      {"case": "gradresnet-ce-compiled", "seconds_per_step": 0.08, "first_step_s": 20.0},
                      {"case": "gradresnet-joint", "seconds_per_step": 0.3},
                      {"case": "gradresnet-joint-compiled", "error": "double backward", "first_step_s": 5.0}]}
    t = compile_table(bench)
    assert list(t.index) == ["gradresnet-ce", "gradresnet-joint"]
    assert t.loc["gradresnet-ce", "compiled ms"] == pytest.approx(80.0) and t.loc["gradresnet-ce", "error"] == ""
    assert pd.isna(t.loc["gradresnet-joint", "compiled ms"]) and t.loc["gradresnet-joint", "error"] == "double backward"


def test_sweep_per_image_divides_each_step_by_its_batch():
    from cdn.book.tables import sweep_per_image

    sweep = {"rows": [{"case": "ce", "width": 8, "batch": 64, "seconds_per_step": 0.064},
                      {"case": "joint", "width": 8, "batch": 64, "seconds_per_step": 0.128},
                      {"case": "joint", "width": 16, "batch": 32, "error": "out of memory"}]}
    t = sweep_per_image(sweep)
    assert t.loc[(8, 64), "ce"] == pytest.approx(1.0) and t.loc[(8, 64), "joint"] == pytest.approx(2.0)
    assert list(t.index) == [(8, 64)]
