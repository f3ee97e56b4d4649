"""The precision a run trains in: ``precision = "auto"`` takes bf16 on a CPU with a bf16 unit and float32
elsewhere (``cdn.train.cpu_has_fast_bf16``), so both paths are exercised here on any CPU by faking the
detection; a run records the precision it trained in and keeps it when resumed.

Tolerances. bf16 keeps 8 significant bits (unit roundoff ``u = 2**-8 = 3.9e-3``). The score path (input
layer, energy, head) stays float32 under autocast, so the score of the same weights moves by much less
than ``u`` (``tests/test_architectures.py`` measures 2.3e-4 on a width-4 net); the loss, whose DSM term
sums ``d`` products of bf16 activations, within ``2 u`` (measured: score 5.1e-4 of its norm, loss 6.5e-4,
an Intel Xeon with AMX). Trained weights (6 AdamW steps) are compared through their updates
``w_K - w_0``: bf16 rounding changes them by ``||Δw_bf16 - Δw_f32|| / ||Δw_f32|| = 0.11`` (measured on the
same machine), another seed (another initialisation and noise stream) by 17, so the bound 0.25 tells
rounding from a different run.
"""
import json

import pytest
import torch
from safetensors.torch import load_file

from cdn import train as T
from cdn.joint import JointModel
from cdn.profiles import get_config
from cdn.committed import precision_note
from cdn.runs import resolve_data
from cdn.train import make_loss, make_net, train

U_BF16 = 2.0 ** -8
SETTINGS = dict(width=4, steps=6, train_size=64, batch_size=8, checkpoint_every=2, log_every=2, warmup_steps=1)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """The runs compared bitwise below compute with one thread (one summation order)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(model="gradresnet-logenergy", **kw):
    """A joint model whose score path stays float32 under autocast (the 3x3 log-energy head), so that
    ``precision='auto'`` can pick bf16 for it."""
    return get_config("smoke", model, "synthetic", **{**SETTINGS, **kw})


def _fake_bf16_unit(monkeypatch, has: bool) -> None:
    monkeypatch.setattr(T, "cpu_has_fast_bf16", lambda cpuinfo=None: has)


def _train(config, run_dir, **kw):
    state = train(config, run_dir, resolve_data(config).train, device="cpu", progress=False, **kw)
    return state, (load_file(str(run_dir / "model.safetensors")) if state["finished"] else None)


@pytest.fixture(scope="module")
def float32_run(tmp_path_factory):
    """The reference: the same run pinned to float32, one thread."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        return _train(_config(precision="float32"), tmp_path_factory.mktemp("float32"))[1]


def _update_error(got: dict, want: dict, init: dict) -> float:
    num = sum(((got[k] - want[k]).float() ** 2).sum() for k in want if want[k].is_floating_point())
    den = sum(((want[k] - init[k]).float() ** 2).sum() for k in want if want[k].is_floating_point())
    return float((num / den).sqrt())


def test_auto_without_a_bf16_unit_is_float32_to_the_bit(tmp_path, monkeypatch, float32_run):
    """Exact by construction: 'auto' resolved to float32 runs the same operations as a float32 run."""
    _fake_bf16_unit(monkeypatch, False)
    state, weights = _train(_config(), tmp_path)
    assert state["autocast"] == "float32"
    assert weights.keys() == float32_run.keys() and all(torch.equal(weights[k], float32_run[k]) for k in weights)


def test_auto_with_a_bf16_unit_trains_in_bf16_within_rounding_of_float32(tmp_path, monkeypatch, float32_run):
    _fake_bf16_unit(monkeypatch, True)
    config = _config()
    state, weights = _train(config, tmp_path)
    assert state["autocast"] == "bf16"
    side = json.loads(sorted((tmp_path / "ckpt").glob("step-*.json"))[-1].read_text())
    assert side["autocast"] == "bf16"  # every checkpoint records it too
    data = resolve_data(config)
    torch.manual_seed(0)
    init = make_net(config, data.train.num_classes, data.train.in_channels).state_dict()
    err = _update_error(weights, float32_run, init)
    assert 0 < err < 0.25, err  # bf16 did happen, and only rounded: measured 0.11
    # another seed, float32: the scale of a different run (measured 17), far beyond rounding
    other = _train(_config(precision="float32", seed=1), tmp_path / "seed1")[1]
    assert _update_error(other, float32_run, init) > 4 * err


def test_auto_trains_the_feature_energy_joint_model_in_float32_even_with_a_bf16_unit(monkeypatch):
    """The default joint model's energy comes from its feature maps, whose score bf16 moves by 1-3%."""
    _fake_bf16_unit(monkeypatch, True)
    cpu = torch.device("cpu")
    assert T.autocast_bf16(_config("gradresnet"), cpu) is False
    assert T.autocast_bf16(_config("gradresnet"), torch.device("cuda")) is False
    assert T.autocast_bf16(_config("gradresnet", precision="bf16"), cpu) is True  # asked for, given
    assert T.autocast_bf16(_config("gradresnet-logenergy"), cpu) is True
    _fake_bf16_unit(monkeypatch, False)
    assert T.autocast_bf16(_config("gradresnet-logenergy"), cpu) is False


def test_score_and_loss_under_bf16_autocast_stay_near_float32():
    """The same weights and noise, the step's loss and the model's score with and without autocast."""
    config = _config()
    data = resolve_data(config)
    torch.manual_seed(0)
    model = JointModel(make_net(config, data.train.num_classes, data.train.in_channels))
    x, c = data.train.images[:8].float() / 255, data.train.labels[:8]
    loss_fn = make_loss(config)
    want = loss_fn(model, x, c, torch.Generator().manual_seed(3))[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss_fn(model, x, c, torch.Generator().manual_seed(3))[0]
    assert abs(got.item() - want.item()) <= 2 * U_BF16 * abs(want.item()), (got.item(), want.item())
    y = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    s32 = model.score(y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s16 = model.score(y)
    assert ((s16 - s32).norm() / s32.norm()).item() < U_BF16


def test_a_resumed_run_keeps_the_precision_it_started_in(tmp_path, monkeypatch, float32_run, capsys):
    """Started on a machine without a bf16 unit and resumed on one with it: 'auto' is resolved once, when
    the run starts, so the resumed run stays float32 and ends on the float32 run's weights to the bit."""
    _fake_bf16_unit(monkeypatch, False)
    config = _config()
    state, _ = _train(config, tmp_path, stop_after=2)
    assert not state["finished"]
    _fake_bf16_unit(monkeypatch, True)
    state, weights = _train(config, tmp_path)
    assert state["autocast"] == "float32"
    assert "resuming in float32, the precision step 2 was trained in" in capsys.readouterr().out
    assert all(torch.equal(weights[k], float32_run[k]) for k in weights)


def test_resumed_precision_rules():
    cpu = torch.device("cpu")
    auto, f32, bf16 = _config(), _config(precision="float32"), _config(precision="bf16")
    assert T.resumed_autocast(auto, cpu, "bf16") is True and T.resumed_autocast(auto, cpu, "float32") is False
    assert T.resumed_autocast(f32, cpu, None) is False and T.resumed_autocast(bf16, cpu, "bf16") is True
    with pytest.raises(ValueError, match="trained in bf16 but precision='float32'"):
        T.resumed_autocast(f32, cpu, "bf16")
    with pytest.raises(ValueError, match="expected 'bf16' or 'float32'"):
        T.resumed_autocast(auto, cpu, "fp8")


def test_a_retrained_run_says_when_its_precision_differs_from_the_committed_one(tmp_path):
    committed = tmp_path / "gradresnet"
    committed.mkdir()
    (committed / "state.json").write_text(json.dumps({"autocast": "float32"}))
    note = precision_note({"run": "cifar10-gradresnet-cpu-0123456789", "autocast": "bf16"}, committed)
    assert "trained in bf16" in note and "in float32" in note and "precision to 'float32'" in note
    assert precision_note({"autocast": "float32"}, committed) is None
    assert precision_note({"autocast": "bf16"}, None) is None
    (committed / "state.json").write_text(json.dumps({}))  # exported before the record: nothing to compare
    assert precision_note({"autocast": "bf16"}, committed) is None
