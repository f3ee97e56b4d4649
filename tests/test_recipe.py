"""cdn.experiments.short_budget: the last weights against their moving average, and test-time flips, on one finished run."""
import json

import pytest
import torch

from cdn.experiments import short_budget as recipe
from cdn.profiles import get_config
from cdn.runs import get_or_train, resolve_data
from cdn.train import autocast_bf16


def _run(**kw):
    base = dict(width=4, steps=6, batch_size=8, train_size=64, test_size=32, checkpoint_every=3, log_every=3)
    config = get_config("smoke", "gradresnet", "synthetic", **{**base, **kw})
    data = resolve_data(config)
    return get_or_train(config, data=data, device="cpu", progress=False), data


def test_moving_average_row_is_the_model_the_run_evaluates():
    run, data = _run(ema_decay=0.9, tta_flip=True)
    worth = recipe.recipe_worth(run.dir, data.test)
    rows = {r["weights"]: r for r in worth["rows"]}
    assert set(rows) == {"last", "moving average"} and worth["steps"] == 6
    expected = "bf16" if autocast_bf16(run.config, torch.device("cpu")) else "float32"
    assert run.state["autocast"] == expected  # state.json records the precision it trained in
    # model.safetensors holds the moving average: its row must reproduce the run's own metrics
    metrics = run.metrics(data.test)
    assert rows["moving average"]["clean accuracy, flip"] == pytest.approx(metrics["clean_accuracy"], abs=1e-9)
    den = {r["sigma"]: r["D(y)"] for r in metrics["denoising"]}
    assert rows["moving average"]["PSNR σ=0.1 (dB)"] == pytest.approx(den[0.1], abs=1e-4)
    for r in rows.values():
        assert 0 <= r["clean accuracy"] <= 1 and 0 <= r["clean accuracy, flip"] <= 1
        assert r["PSNR noisy σ=0.1 (dB)"] == pytest.approx(rows["last"]["PSNR noisy σ=0.1 (dB)"])  # same noise
    weights = recipe.last_and_average(run.dir)
    assert any(not torch.equal(weights["last"][k], weights["moving average"][k]) for k in weights["last"])
    assert set(recipe.table({"runs": [worth]}).columns) >= {"clean accuracy", "clean accuracy, flip"}


def test_a_run_without_moving_average_is_refused():
    run, data = _run()
    with pytest.raises(ValueError, match="without ema_decay"):
        recipe.recipe_worth(run.dir, data.test)


def test_measure_names_the_missing_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="train it first"):
        recipe.measure("smoke", ["gradresnet-ce"], "synthetic", out=tmp_path / "r.json")
