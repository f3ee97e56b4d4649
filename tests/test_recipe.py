"""The recipe for short budgets: a schedule over training seconds, a moving average of the weights
(EMA) and test-time flips, each a Config field that leaves the old runs' names alone."""
import json

import pytest
import torch
from safetensors.torch import load_file

from cdn.checkpoint import load_tensors
from cdn.evaluate import classification_vs_sigma, classify_flip
from cdn.joint import JointModel
from cdn.profiles import HASHED_WHEN_SET, PROFILES, get_config
from cdn.runs import resolve_data
from cdn.train import ema_decay_at, lr_at, make_net, read_log, train


def _config(**kw):
    base = dict(width=4, steps=12, batch_size=8, train_size=64, test_size=32, warmup_steps=2, checkpoint_every=4,
                log_every=2)
    base.update(kw)
    return get_config("smoke", "gradresnet", "synthetic", **base)


def test_new_fields_enter_the_hash_only_when_set():
    plain = get_config("quick", "gradresnet", "cifar10")
    for name, value in (("time_budget_s", 60.0), ("ema_decay", 0.99), ("tta_flip", True)):
        assert name in HASHED_WHEN_SET
        assert get_config("quick", "gradresnet", "cifar10", **{name: value}).run_name() != plain.run_name()
    with pytest.raises(ValueError, match="ema_decay"):
        get_config("quick", "gradresnet", "cifar10", ema_decay=1.0)
    with pytest.raises(ValueError, match="time_budget_s"):
        get_config("quick", "gradresnet", "cifar10", time_budget_s=0)


def test_ema_equals_the_hand_computation_over_three_steps(tmp_path):
    config = _config(steps=3, checkpoint_every=1, ema_decay=0.9)
    data = resolve_data(config)
    theta = [make_net(config, data.train.num_classes, data.train.in_channels).state_dict()]
    for k in (1, 2, 3):  # stop after each step (resume is exact) and read the weights of that step
        train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=k)
        tensors = load_tensors(tmp_path / "ckpt" / f"step-{k:08d}.safetensors")
        theta.append({n[len("model/"):]: v for n, v in tensors.items() if n.startswith("model/")})
    hand = {n: v.clone() for n, v in theta[0].items()}
    for step in range(3):
        d = ema_decay_at(step, config)
        hand = {n: d * hand[n] + (1 - d) * theta[step + 1][n] for n in hand}
    assert [ema_decay_at(s, config) for s in range(3)] == pytest.approx([0.1, 2 / 11, 0.25])
    final = load_file(str(tmp_path / "model.safetensors"))
    ckpt_ema = {n[len("ema/"):]: v for n, v in tensors.items() if n.startswith("ema/")}
    for n in hand:
        torch.testing.assert_close(final[n], hand[n], rtol=1e-5, atol=1e-6)
        assert torch.equal(final[n], ckpt_ema[n])
    assert any(not torch.allclose(final[n], theta[3][n]) for n in hand)  # the average, not the last weights


def test_resume_with_ema_is_bit_exact(tmp_path):
    config = _config(ema_decay=0.95)
    data = resolve_data(config)
    train(config, tmp_path / "once", data.train, device="cpu", progress=False)
    state = train(config, tmp_path / "twice", data.train, device="cpu", progress=False, stop_after=6)
    assert not state["finished"]
    train(config, tmp_path / "twice", data.train, device="cpu", progress=False)
    a = load_file(str(tmp_path / "once" / "model.safetensors"))
    b = load_file(str(tmp_path / "twice" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la, lb = read_log(tmp_path / "once"), read_log(tmp_path / "twice")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def test_time_budget_schedule_reaches_zero_at_the_budget():
    config = _config(time_budget_s=100.0, warmup_steps=10, lr=1.0)
    assert lr_at(0, config, 0.0) == pytest.approx(0.1)  # warm-up ramp
    assert lr_at(50, config, 0.0) == pytest.approx(1.0)
    assert lr_at(50, config, 50.0) == pytest.approx(0.5)
    assert lr_at(50, config, 100.0) == 0.0 and lr_at(50, config, 250.0) == 0.0
    lrs = [lr_at(50, config, t) for t in range(0, 101, 5)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    with pytest.raises(ValueError, match="elapsed_s"):
        lr_at(3, config)


class _FakeClock:
    """``time.perf_counter`` advancing 0.05 s per call: the run's seconds no longer depend on the load
    of the machine running the tests."""

    def __init__(self):
        self.t = 0.0

    def perf_counter(self) -> float:
        self.t += 0.05
        return self.t


def test_time_budget_run_ends_when_spent_and_resumes_its_schedule(tmp_path, monkeypatch):
    import cdn.train

    monkeypatch.setattr(cdn.train, "time", _FakeClock())
    config = _config(time_budget_s=2.0, steps=100_000, checkpoint_every=5, log_every=1, ema_decay=0.9)
    data = resolve_data(config)
    state = train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=5)  # an interruption
    assert not state["finished"] and state["step"] == 5
    spent_before = state["elapsed_s"]
    state = train(config, tmp_path, data.train, device="cpu", progress=False)
    assert state["finished"] and config.steps > state["step"] > 10 and state["elapsed_s"] >= 2.0
    log = read_log(tmp_path)
    assert [r["step"] for r in log] == list(range(1, state["step"] + 1))
    elapsed = [r["elapsed_s"] for r in log]
    assert all(a <= b for a, b in zip(elapsed, elapsed[1:])) and elapsed[5] >= spent_before  # time continues
    lrs = [r["lr"] for r in log[config.warmup_steps:]]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # one decay across the resume
    assert lrs[-1] < 0.1 * config.lr
    assert json.loads((tmp_path / "state.json").read_text())["time_budget_s"] == 2.0
    # a run whose budget is spent does nothing more
    assert train(config, tmp_path, data.train, device="cpu", progress=False)["step"] == state["step"]


def test_flip_tta_equals_no_tta_on_a_mirror_symmetric_input():
    torch.manual_seed(0)
    config = _config()
    model = JointModel(make_net(config, 4, 3).eval())
    x = torch.rand(6, 3, 16, 16)
    sym = (x + x.flip(-1)) / 2
    with torch.no_grad():
        torch.testing.assert_close(classify_flip(model, sym), model.classify(sym), rtol=0, atol=1e-6)
        assert not torch.allclose(classify_flip(model, x), model.classify(x), atol=1e-4)  # it does flip
        assert torch.allclose(classify_flip(model, x).exp().sum(1), torch.ones(6))  # and is normalised


def test_flip_tta_in_the_metrics():
    config = _config()
    data = resolve_data(config)
    ds = data.test
    ds.images = ((ds.images.float() + ds.images.flip(-1).float()) / 2).round().to(torch.uint8)
    ds.images = torch.maximum(ds.images, ds.images.flip(-1))  # exactly symmetric after rounding
    model = JointModel(make_net(config, ds.num_classes, ds.in_channels).eval())
    plain = classification_vs_sigma(model, ds, (0.0,), device="cpu")
    flip = classification_vs_sigma(model, ds, (0.0,), device="cpu", tta_flip=True)
    assert flip[0]["accuracy"] == plain[0]["accuracy"] and flip[0]["nll"] == pytest.approx(plain[0]["nll"], abs=1e-6)


def test_cpu_profile_trains_the_five_models_in_three_hours():
    assert "cpu" in PROFILES
    models = ["gradresnet", "gradresnet-ce", "resnet18", "resnet18-noise", "unet"]
    configs = [get_config("cpu", m, "cifar10") for m in models]
    assert {c.width for c in configs} == {32} and all(c.train_size is None and c.test_size is None for c in configs)
    assert all(c.ema_decay and c.time_budget_s for c in configs)
    assert sum(c.time_budget_s for c in configs) <= 3 * 3600
    assert not configs[0].allow_fallback  # never the digits in the committed reference numbers
    for dataset in ("tiny-imagenet", "digits", "synthetic"):
        get_config("cpu", "gradresnet", dataset)


def test_every_per_profile_table_has_every_profile():
    """A chapter run in any profile finds its sizes (``make book PROFILE=cpu`` must not stop on a KeyError)."""
    from cdn import attacks, certify, corruptions, report, theory
    from cdn.profiles import PROFILE_SETTINGS

    for table in (attacks.SIZES, certify.SIZES, corruptions.SIZES, theory.THEORY_SETTINGS, report.CLASSICAL_IMAGES,
                  PROFILE_SETTINGS):
        assert set(PROFILES) <= set(table), table
    for profile in PROFILES:
        assert set(PROFILE_SETTINGS[profile]) >= {"cifar10", "tiny-imagenet", "digits", "synthetic"}
        for model in theory.theory_settings(profile)["ablation_models"]:
            get_config(profile, model, "cifar10", **theory.theory_settings(profile)["ablation_overrides"])
