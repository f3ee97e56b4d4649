"""``python -m cdn robustness`` (cdn.experiments.robustness): chapter 11's attacks on a profile's committed models,
written with what they were computed from. Checked end to end on tiny committed runs of the smoke profile."""
from __future__ import annotations

import json

import pytest
import torch

from cdn.experiments import robustness
from cdn.profiles import get_config, model_label
from cdn.runs import export_run, get_or_train, resolve_data


@pytest.fixture
def committed_smoke(tmp_path, monkeypatch):
    """The four models of ``robustness.MODELS`` trained in the smoke profile on synthetic data and exported to a
    results folder of their own (``$CDN_RESULTS``)."""
    monkeypatch.setenv("CDN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CDN_RESULTS", str(tmp_path / "results"))
    names = {}
    for m in robustness.MODELS:
        config = get_config("smoke", m, "synthetic")
        run = get_or_train(config, data=resolve_data(config), device="cpu", progress=False)
        export_run(run.dir, tmp_path / "results" / "smoke-synthetic" / m)
        names[m] = config.run_name()
    return tmp_path / "results", names


def test_measure_attacks_the_committed_runs_and_records_them(committed_smoke, tmp_path):
    results, names = committed_smoke
    out = tmp_path / "robustness-smoke.json"
    robustness.main(["--profile", "smoke", "--dataset", "synthetic", "--out", str(out)])
    record = json.loads(out.read_text())
    meta = record["meta"]
    assert {m: r["run"] for m, r in meta["runs"].items()} == names
    assert all(len(r["weights_sha256"]) == 64 for r in meta["runs"].values())
    assert meta["command"].startswith("python -m cdn robustness --profile smoke") and meta["commit"]
    assert "/" not in json.dumps(meta["data"])  # a file name and checksum, never a path
    labels = {model_label(m) for m in robustness.MODELS}
    averaged = {k for k in record["curves"] if "noise-averaged" in k}
    assert set(record["curves"]) == labels | averaged and len(averaged) == len(robustness.AVERAGED)
    for curves in record["curves"].values():
        for norm, rows in curves.items():
            acc = [r["accuracy"] for r in rows]
            assert acc == sorted(acc, reverse=True), f"{norm}: an adversarial curve never rises"
    errors = record["identity_max_relative_error_float64"]
    assert set(errors) == {f"{s:g}" for s in robustness.IDENTITY_SIGMAS}
    assert max(errors.values()) < 1e-8  # the identity is exact: float64 rounding only


def test_a_model_without_a_committed_run_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CDN_RESULTS", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="cdn export"):
        robustness.measure("smoke", dataset="synthetic")


def test_test_images_are_the_seeded_permutation():
    config = get_config("smoke", "gradresnet", "synthetic")
    test = resolve_data(config).test
    x, c = robustness.test_images(test, 5, seed=3, device="cpu")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(3))[:5]
    torch.testing.assert_close(x, test.to_float(order, "cpu"))
    assert torch.equal(c, test.labels[order])
