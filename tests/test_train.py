"""Training: the joint objective learns both tasks; resume is exact; checkpoints are safe."""
import json

import pytest
import torch
from safetensors.torch import load_file

from cdn.checkpoint import CheckpointError, load_tensors
from cdn.evaluate import classification_vs_sigma, joint_denoisers, psnr_vs_sigma
from cdn.profiles import FIRST_JOINT_SETTINGS, get_config
from cdn.runs import get_or_train, load_run, resolve_data
from cdn.train import lr_at, read_log, train


def _cfg(**kw):
    base = dict(width=8, steps=200, batch_size=32, lr=2e-3, warmup_steps=20, train_size=1024, test_size=256,
                checkpoint_every=100, log_every=20)
    base.update(kw)
    return get_config("smoke", "gradresnet", "synthetic", **base)


@pytest.mark.slow
def test_joint_training_learns_to_classify_and_denoise(tmp_path):
    config = _cfg()
    data = resolve_data(config)
    run = get_or_train(config, data=data, root=tmp_path, device="cpu", progress=False)
    log = run.log()
    first, last = log[0], log[-1]
    assert last["ce"] < first["ce"] and last["dsm"] < first["dsm"]
    acc = classification_vs_sigma(run.model, data.test, (0.0,), device="cpu")[0]["accuracy"]
    assert acc > 1.5 / data.test.num_classes  # well above chance (0.25)
    rows = psnr_vs_sigma(joint_denoisers(run.model, data.test.num_classes), data.test, (0.1,), device="cpu")
    assert rows[0]["D(y)"] - rows[0]["noisy"] > 0.0
    assert rows[0]["D(y,c)"] - rows[0]["noisy"] > 0.0


def test_resume_is_exact(tmp_path):
    config = _cfg(steps=12, checkpoint_every=4, log_every=2, train_size=128)
    data = resolve_data(config)
    train(config, tmp_path / "once", data.train, device="cpu", progress=False)
    state = train(config, tmp_path / "twice", data.train, device="cpu", progress=False, stop_after=6)
    assert not state["finished"] and not (tmp_path / "twice" / "model.safetensors").exists()
    train(config, tmp_path / "twice", data.train, device="cpu", progress=False)
    a = load_file(str(tmp_path / "once" / "model.safetensors"))
    b = load_file(str(tmp_path / "twice" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the log of the resumed run has the same steps and losses
    la, lb = read_log(tmp_path / "once"), read_log(tmp_path / "twice")
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    assert [r["loss"] for r in la] == pytest.approx([r["loss"] for r in lb], rel=1e-6)


def test_balanced_lam_moves_toward_equal_gradient_norms():
    from cdn.train import balanced_lam

    assert balanced_lam(3.0, 2.0, 2.0) == pytest.approx(3.0)  # equal norms: a fixed point
    # ||grad CE|| = 4 ||grad lam DSM||: the balanced lam is 4 lam, reached in log space at the given rate
    assert balanced_lam(1.0, 4.0, 1.0, rate=1.0) == pytest.approx(4.0)
    assert balanced_lam(1.0, 4.0, 1.0, rate=0.5) == pytest.approx(2.0)
    assert 1.0 < balanced_lam(1.0, 4.0, 1.0) < 4.0 and balanced_lam(1.0, 1.0, 4.0) < 1.0
    for bad in ((0.0, 1.0, 1.0), (1.0, float("nan"), 1.0), (1.0, 1.0, 0.0)):
        with pytest.raises(ValueError, match="finite and > 0"):
            balanced_lam(*bad)
    with pytest.raises(ValueError, match="lam_balance_every"):
        _cfg(lam_balance_every=-1)
    with pytest.raises(ValueError, match="joint loss"):
        get_config("smoke", "resnet18", "synthetic", lam_balance_every=5)


def test_balanced_lam_is_logged_and_resumes_exactly(tmp_path):
    config = _cfg(steps=12, checkpoint_every=4, log_every=2, train_size=128, lam_balance_every=2)
    assert config.run_name() != _cfg(steps=12, checkpoint_every=4, log_every=2, train_size=128).run_name()
    data = resolve_data(config)
    once = train(config, tmp_path / "once", data.train, device="cpu", progress=False)
    train(config, tmp_path / "twice", data.train, device="cpu", progress=False, stop_after=6)
    twice = train(config, tmp_path / "twice", data.train, device="cpu", progress=False)
    a = load_file(str(tmp_path / "once" / "model.safetensors"))
    b = load_file(str(tmp_path / "twice" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    lams = [r["lam"] for r in read_log(tmp_path / "once")]
    assert lams == [r["lam"] for r in read_log(tmp_path / "twice")]
    assert lams[-1] != config.lam and once["lam_final"] == twice["lam_final"] == lams[-1]


def test_resume_with_batchnorm_baseline_is_exact(tmp_path):
    config = get_config("smoke", "resnet18-noise", "synthetic", steps=8, checkpoint_every=3, train_size=128)
    data = resolve_data(config)
    train(config, tmp_path / "once", data.train, device="cpu", progress=False)
    train(config, tmp_path / "twice", data.train, device="cpu", progress=False, stop_after=5)
    train(config, tmp_path / "twice", data.train, device="cpu", progress=False)
    a = load_file(str(tmp_path / "once" / "model.safetensors"))
    b = load_file(str(tmp_path / "twice" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finished_run_is_reused_and_other_config_is_not(tmp_path):
    config = _cfg(steps=4, train_size=64, checkpoint_every=2)
    data = resolve_data(config)
    run = get_or_train(config, data=data, root=tmp_path, device="cpu", progress=False)
    mtime = (run.dir / "model.safetensors").stat().st_mtime_ns
    again = get_or_train(config, data=data, root=tmp_path, device="cpu", progress=False)
    assert again.dir == run.dir and (again.dir / "model.safetensors").stat().st_mtime_ns == mtime
    other = get_or_train(_cfg(steps=4, train_size=64, checkpoint_every=2, lam=0.5), data=data, root=tmp_path,
                         device="cpu", progress=False)
    assert other.dir != run.dir
    assert json.loads((other.dir / "config.json").read_text())["lam"] == 0.5


def test_corrupted_checkpoint_falls_back_to_previous(tmp_path):
    config = _cfg(steps=6, checkpoint_every=2, train_size=64)
    data = resolve_data(config)
    train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=4)
    newest = tmp_path / "ckpt" / "step-00000004.safetensors"
    raw = bytearray(newest.read_bytes())
    mid = len(raw) // 2
    raw[mid:mid + 16] = bytes(b ^ 0xFF for b in raw[mid:mid + 16])
    newest.write_bytes(bytes(raw))
    msgs = []
    from cdn.checkpoint import latest_training_checkpoint

    found = latest_training_checkpoint(tmp_path / "ckpt", log=msgs.append)
    assert found is not None and found[1]["step"] == 2
    assert msgs and "corrupted" in msgs[0]


def test_pickle_checkpoint_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_tensors(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    config = _cfg(steps=2, train_size=64, checkpoint_every=2)
    data = resolve_data(config)
    run = get_or_train(config, data=data, root=tmp_path, device="cpu", progress=False)
    cfg = json.loads((run.dir / "config.json").read_text())
    cfg["width"] = 16
    (run.dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="another architecture"):
        load_run(run.dir, "cpu")


def test_non_finite_loss_stops_with_clear_message(tmp_path):
    config = _cfg(steps=4, train_size=64, lr=1e30, checkpoint_every=1, warmup_steps=1)
    data = resolve_data(config)
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train(config, tmp_path, data.train, device="cpu", progress=False)


def test_lr_schedule_warmup_then_cosine():
    config = _cfg(steps=100, warmup_steps=10, lr=1.0)
    assert lr_at(0, config) == pytest.approx(0.1)
    assert lr_at(9, config) == pytest.approx(1.0)
    assert lr_at(55, config) == pytest.approx(0.5)
    assert lr_at(99, config) < 0.01



def test_existing_run_names_are_stable():
    """Run directories are named by the configuration's hash: a change to Config (a new field, a
    new default) renames every run, and every chapter would silently retrain. Adding a model must
    not; update this name only with an intended change of a model or a CODE_VERSION bump. The joint
    model ``gradresnet`` changed its architecture (cdn.profiles.JOINT_ARCH, issue 22), then its lam
    (cdn.profiles.JOINT_LAM), then its sigma law and the images its cross-entropy sees (cdn.profiles.JOINT_SETTINGS):
    its name changed with each, and the first default keeps its old name under another model name, with the same
    architecture; each earlier setting keeps its name when set explicitly; the exercises keep their names."""
    assert get_config("quick", "gradresnet", "cifar10").run_name() == "cifar10-gradresnet-quick-bcf2152ac1"
    assert get_config("quick", "gradresnet", "cifar10", lam=3.0, sigma_distribution="log_uniform",
                      ce_on="noisy").run_name() == "cifar10-gradresnet-quick-56ea844d5d"
    assert get_config("quick", "gradresnet", "cifar10",
                      **FIRST_JOINT_SETTINGS).run_name() == "cifar10-gradresnet-quick-1ff9657fbe"
    assert get_config("quick", "gradresnet-logenergy", "cifar10").arch == "gradresnet"
    assert get_config("quick", "resnet18", "cifar10").run_name() == "cifar10-resnet18-quick-4039b818b1"  # unchanged


def test_race_and_exercises_keep_their_committed_runs():
    """The efficiency race and the exercises train with the joint model's first settings
    (cdn.profiles.FIRST_JOINT_SETTINGS): a change of the default does not rename their committed runs
    (results/efficiency/quick-joint-b90b61cae3.json, results/quick-cifar10/gradresnet-d081942a07)."""
    from cdn.book import exercises
    from cdn.experiments.efficiency import race_config, race_file

    assert race_file("quick", "joint").name == "quick-joint-b90b61cae3.json"
    assert (race_config("quick").lam, race_config("quick").sigma_distribution, race_config("quick").ce_on) == \
        (1.0, "log_uniform", "noisy")
    assert exercises.config("quick", "gradresnet", "cifar10").key() == "d081942a07"
    assert exercises.config("quick", "gradresnet", "cifar10", lam=0.1).key() == "4a8101cff4"
