"""The accuracy-against-time loop of the efficiency chapter (cdn.experiments.efficiency) and its FLOP counts."""
import pytest
import torch

from cdn.data import make_synthetic
from cdn.experiments.efficiency import JointTrainer, accuracy_at, accuracy_vs_time, flops_per_image, race_rows, race_title
from cdn.profiles import get_config


class _Diverging(JointTrainer):
    def step(self, x, c, lr=None):
        if self.calls == 3:
            raise FloatingPointError("boom")
        self.calls += 1
        return super().step(x, c, lr)


def test_curve_starts_at_zero_and_records_divergence():
    data = make_synthetic("train", size=8, n=64)
    test = make_synthetic("test", size=8, n=32)
    tr = _Diverging(get_config("smoke", "gradresnet", "synthetic", width=2), 4, 3)
    tr.calls = 0
    before = [p.clone() for p in tr.net.parameters()]
    out = accuracy_vs_time(tr, data, test, budget_s=60, eval_every_s=30, batch_size=8, lr=1e-3, warmup_steps=2)
    assert out["steps"] == 3 and out["diverged"]["step"] == 3
    assert out["curve"][0]["seconds"] == 0 and out["curve"][0]["step"] == 0
    assert all(0 <= p["accuracy"] <= 1 for p in out["curve"])
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.net.parameters()))
    with pytest.raises(ValueError, match="budget_s"):
        accuracy_vs_time(tr, data, test, budget_s=0, eval_every_s=1, batch_size=8, lr=1e-3, warmup_steps=1)


def test_accuracy_at_takes_the_last_measurement_before():
    curve = [{"seconds": 0.0, "accuracy": 0.1}, {"seconds": 10.0, "accuracy": 0.3}, {"seconds": 20.0, "accuracy": 0.5}]
    assert accuracy_at(curve, 15) == 0.3 and accuracy_at(curve, 20) == 0.5 and accuracy_at(curve, -1) is None


def test_race_rows_read_each_curve_at_fractions_of_the_budget():
    curve = [{"seconds": 0.0, "accuracy": 0.1}, {"seconds": 40.0, "accuracy": 0.3}, {"seconds": 110.0, "accuracy": 0.2}]
    race = {"settings": {"budget_s": 100, "lr": 1e-3},
            "models": {"joint": {"arch": "a", "steps": 55, "curve": curve, "diverged": None},
                       "jem": {"arch": "b", "steps": 11, "lr": 1e-4, "threads": 2, "curve": curve[:2],
                               "diverged": {"step": 11}}}}
    joint, jem = race_rows(race)
    assert joint["model"] == "joint" and joint["lr"] == 1e-3 and joint["diverged"] == "no"
    assert joint["accuracy at 25 s"] == 0.1 and joint["accuracy at 50 s"] == 0.3
    assert joint["accuracy at 100 s"] == 0.2 and joint["best accuracy"] == 0.3  # the last, then the best
    assert joint["updates per second"] == pytest.approx(55 / 110)
    assert jem["lr"] == 1e-4 and jem["diverged"] == "at update 11" and jem["updates per second"] == pytest.approx(11 / 40)


def test_jem_flops_are_affine_in_the_number_of_sgld_steps():
    f = [flops_per_image("jem", width=2, size=8, k=k) for k in (1, 2, 3)]
    assert f[2] - f[1] == f[1] - f[0] > 0
    # one SGLD step (a forward and a backward to the input) costs less than a cross-entropy step
    # (whose backward also computes the weights' gradients) and the joint step more
    assert f[1] - f[0] < flops_per_image("ce", width=2, size=8) < flops_per_image("joint", width=2, size=8)


def test_cross_entropy_on_clean_images_adds_exactly_one_cross_entropy_step():
    """The default's ce_on="both" (cdn.profiles.JOINT_SETTINGS): the clean image's cross-entropy is one more
    forward and backward of the classifier, which no part of the joint step shares."""
    arch = "gradresnet-stage1energy"
    both, noisy = (flops_per_image("joint", arch, width=2, size=8, ce_on=on) for on in ("both", "noisy"))
    assert both - noisy == flops_per_image("ce", arch, width=2, size=8) > 0


def test_functional_joint_loss_equals_joint_loss():
    from cdn.experiments.compiled_loss import joint_loss
    from cdn.joint import JointModel
    from cdn.losses import JointLoss, SigmaSampler
    from cdn.nets import build_net

    torch.manual_seed(0)
    net = build_net("gradresnet", 4, 3, 4)
    x, c = torch.rand(6, 3, 8, 8), torch.randint(0, 4, (6,))
    ref, _ = JointLoss()(JointModel(net), x, c, torch.Generator().manual_seed(7))
    ref_grads = torch.autograd.grad(ref, list(net.parameters()), allow_unused=True)
    g = torch.Generator().manual_seed(7)
    sigma = SigmaSampler()(6, g)
    eps = torch.randn(x.shape, generator=g)
    params = dict(net.named_parameters())
    loss = joint_loss(net, params, x, c, sigma, eps)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    torch.testing.assert_close(loss, ref)
    assert any(b is not None for b in ref_grads)
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None)
        if b is not None:
            torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="sigma"):
        joint_loss(net, params, x, c, sigma[:2], eps)


def test_race_reads_a_committed_curve_before_racing(tmp_path, monkeypatch):
    """A curve under results/efficiency/ with the cached curve's name is used as it is: a newcomer's
    build does not race again; ``refresh`` races anyway."""
    import json

    import cdn.experiments.efficiency as eff

    monkeypatch.setenv("CDN_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("CDN_RESULTS", str(tmp_path / "results"))
    first = eff.race("smoke", models=("joint",))
    [cached] = (tmp_path / "runs" / "efficiency").glob("smoke-joint-*.json")
    committed = tmp_path / "results" / "efficiency" / cached.name
    committed.parent.mkdir(parents=True)
    committed.write_text(json.dumps(dict(first["models"]["joint"], marker="committed")))
    cached.unlink()

    def no_race(*args, **kwargs):
        raise AssertionError("raced although a committed curve matches")

    monkeypatch.setattr(eff, "accuracy_vs_time", no_race)
    assert first["models"]["joint"]["committed"] is False
    again = eff.race("smoke", models=("joint",))["models"]["joint"]
    assert again["marker"] == "committed" and again["committed"] is True
    with pytest.raises(AssertionError, match="raced although"):
        eff.race("smoke", models=("joint",), refresh=True)


def test_race_title_names_devices_and_committed_curves():
    race = {"device": "cpu", "threads": 2, "train_images": 100, "test_images": 50,
            "models": {"joint": {"committed": False}, "jem": {"threads": 1, "committed": False}}}
    assert race_title(race) == "100 training images, 50 test images; cpu, 1 thread(s); cpu, 2 thread(s)"
    race["models"]["jem"]["committed"] = True
    assert race_title(race).endswith("(the committed curves of results/efficiency/, not raced in this build)")
