"""Faults: training survives SIGKILL at any moment, SIGTERM, kills during a checkpoint write or a log
append, truncated, missing or forged checkpoints, and a non-finite loss (chapter "Training the
joint model"). Each fault is provoked and its outcome checked against an uninterrupted run with
``torch.equal`` (CPU, seeded, one thread in every process).

Already covered elsewhere and not repeated here: a bit-flipped checkpoint falls back to the previous
one, ``torch.save`` files are refused and a non-finite loss raises (tests/test_train.py); weights of
another architecture are refused (tests/test_train.py).
"""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cdn.checkpoint import CheckpointError, latest_training_checkpoint, load_tensors, sha256_file
from cdn.cli import main
from cdn.profiles import get_config
from cdn.runs import resolve_data
from cdn.train import read_log, train

REPO = Path(__file__).resolve().parent.parent
SETTINGS = dict(width=4, steps=20, train_size=64, batch_size=8, checkpoint_every=1, log_every=1, warmup_steps=2)


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """The child processes and this one compute with one thread, so their floats are the same."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _config(**kw):
    return get_config("smoke", "gradresnet", "synthetic", **{**SETTINGS, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The final weights of the run that nothing interrupted."""
    # one thread, as in the children, whatever the caller's OMP_NUM_THREADS (this module-scoped
    # fixture runs before the function-scoped _one_thread)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        config = _config()
        run_dir = tmp_path_factory.mktemp("uninterrupted")
        train(config, run_dir, resolve_data(config).train, device="cpu", progress=False)
    return load_file(str(run_dir / "model.safetensors"))


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _child(run_dir: Path) -> subprocess.Popen:
    """Training in a child process, as a user's ``cdn train`` would run."""
    code = ("import json, sys; from cdn.profiles import get_config; from cdn.runs import resolve_data; "
            "from cdn.train import train; c = get_config('smoke', 'gradresnet', 'synthetic', **json.loads(sys.argv[1])); "
            "s = train(c, sys.argv[2], resolve_data(c).train, device='cpu', progress=False); print(json.dumps(s))")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", code, json.dumps(SETTINGS), str(run_dir)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, after: int = 0, timeout: float = 120.0) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        steps = [int(p.stem.split("-")[1]) for p in (run_dir / "ckpt").glob("step-*.json")]
        if steps and max(steps) > after:
            return
        if proc.poll() is not None:
            raise AssertionError(f"child ended before a checkpoint: {proc.communicate()}")
        time.sleep(0.005)
    raise AssertionError("no checkpoint appeared")


def _newest_step(run_dir: Path) -> int:
    found = latest_training_checkpoint(run_dir / "ckpt")
    return 0 if found is None else found[1]["step"]


def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, uninterrupted):
    rng = random.Random(0)
    run_dir, kills = tmp_path / "run", []
    for _ in range(2):
        before = _newest_step(run_dir)
        proc = _child(run_dir)
        _wait_for_checkpoint(run_dir, proc, after=before)
        time.sleep(rng.uniform(0.0, 0.25))  # any moment: mid-step, mid-checkpoint, mid-log-append
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        kills.append(_newest_step(run_dir))
    assert not (run_dir / "model.safetensors").exists(), "the run finished before the kills; make it longer"
    assert 0 < kills[0] < kills[1] < SETTINGS["steps"]
    state = train(_config(), run_dir, resolve_data(_config()).train, device="cpu", progress=False)
    assert state["finished"]
    assert _same(load_file(str(run_dir / "model.safetensors")), uninterrupted)
    steps = [row["step"] for row in read_log(run_dir)]
    assert steps == list(range(1, SETTINGS["steps"] + 1))  # no duplicated or torn log rows


def test_sigterm_saves_a_checkpoint_returns_and_resumes_exactly(tmp_path, uninterrupted):
    """A real SIGTERM delivered to the process during step 2 (as from a scheduler): the step ends,
    its checkpoint is written, ``train`` returns ``preempted``, the handler that was installed
    before ``train`` is back, and a resume ends with the uninterrupted weights. (SIGTERM from
    outside, through torchrun, to a data-parallel run: tests/test_distributed.py.)"""
    config = _config()
    seen = []
    prev = signal.signal(signal.SIGTERM, lambda *a: seen.append(a))
    try:
        import cdn.train as T

        orig = T.lr_at

        def lr_then_term(step, cfg):
            if step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return orig(step, cfg)

        T.lr_at = lr_then_term
        try:
            state = train(config, tmp_path, resolve_data(config).train, device="cpu", progress=False)
        finally:
            T.lr_at = orig
        assert state["preempted"] and not state["finished"] and state["step"] == 3 and _newest_step(tmp_path) == 3
        assert json.loads((tmp_path / "state.json").read_text())["preempted"]
        assert not (tmp_path / "model.safetensors").exists()
        assert seen == []  # train's handler took it, not ours
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        os.kill(os.getpid(), signal.SIGTERM)
        assert len(seen) == 1  # ours is back
    finally:
        signal.signal(signal.SIGTERM, prev)
    train(config, tmp_path, resolve_data(config).train, device="cpu", progress=False)
    assert _same(load_file(str(tmp_path / "model.safetensors")), uninterrupted)


def test_cli_train_preempted_then_resumed(tmp_path, capsys):
    """``cdn train`` answers a SIGTERM with exit status 0 and a note; the same command resumes."""
    args = ["train", "--profile", "smoke", "--dataset", "synthetic", "--device", "cpu", "--no-progress", "--no-eval",
            "--runs", str(tmp_path), "--set", "width=4", "steps=4", "train_size=64", "batch_size=8"]
    import cdn.train as T

    orig = T.lr_at
    T.lr_at = lambda step, cfg: (os.kill(os.getpid(), signal.SIGTERM) if step == 1 else None) or orig(step, cfg)
    try:
        assert main(args) == 0
    finally:
        T.lr_at = orig
    assert "preempted at step 2" in capsys.readouterr().out
    assert main(args) == 0
    (run,) = tmp_path.iterdir()
    assert json.loads((run / "state.json").read_text())["finished"]


def test_kill_during_checkpoint_write_leaves_previous_intact(tmp_path, uninterrupted):
    """What a kill during ``save_training_checkpoint`` can leave: a partial ``.tmp`` (killed while
    writing the tensors) or a complete safetensors file without its sidecar (killed before the
    sidecar's rename). Neither counts; the previous checkpoint is used and the run ends exact."""
    config, data = _config(), resolve_data(_config())
    train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=10)
    ckpt = tmp_path / "ckpt"
    good = (ckpt / "step-00000010.safetensors").read_bytes()
    (ckpt / "step-00000012.safetensors.tmp").write_bytes(good[: len(good) // 3])
    (ckpt / "step-00000011.safetensors").write_bytes(good)  # no sidecar
    (ckpt / "step-00000013.json.tmp").write_text('{"step": 13, "sha')
    found = latest_training_checkpoint(ckpt)
    assert found[1]["step"] == 10
    train(config, tmp_path, data.train, device="cpu", progress=False)
    assert not list(ckpt.glob("*.tmp"))  # stale temporaries removed on resume
    assert _same(load_file(str(tmp_path / "model.safetensors")), uninterrupted)


@pytest.mark.parametrize("damage", ["truncate", "delete-tensors", "garbage-sidecar", "empty-file"])
def test_damaged_newest_checkpoint_is_reported_and_resume_falls_back(tmp_path, uninterrupted, damage, capsys):
    config, data = _config(), resolve_data(_config())
    train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=10)
    newest = tmp_path / "ckpt" / "step-00000010.safetensors"
    if damage == "truncate":
        newest.write_bytes(newest.read_bytes()[:-100])
    elif damage == "delete-tensors":
        newest.unlink()
    elif damage == "garbage-sidecar":
        newest.with_suffix(".json").write_text("{not json")
    else:
        newest.write_bytes(b"")
    msgs = []
    assert latest_training_checkpoint(tmp_path / "ckpt", log=msgs.append)[1]["step"] == 9
    assert msgs and "step-00000010.json" in msgs[0]
    train(config, tmp_path, data.train, device="cpu", progress=False)
    assert "skipping bad checkpoint step-00000010.json" in capsys.readouterr().out
    assert _same(load_file(str(tmp_path / "model.safetensors")), uninterrupted)


def test_kill_during_log_append_is_repaired_on_resume(tmp_path, uninterrupted):
    config, data = _config(), resolve_data(_config())
    train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=10)
    with open(tmp_path / "log.jsonl", "a") as f:
        f.write('{"step": 11, "epoch": 1.37, "lo')  # torn line
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, 11))
    train(config, tmp_path, data.train, device="cpu", progress=False)
    assert [r["step"] for r in read_log(tmp_path)] == list(range(1, SETTINGS["steps"] + 1))
    assert _same(load_file(str(tmp_path / "model.safetensors")), uninterrupted)


class _Payload:
    """Unpickling this creates a marker file: the proof that something was unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4, 5, "torch.save"])
def test_forged_pickle_checkpoint_is_never_unpickled(tmp_path, protocol):
    """A pickle posing as the newest training checkpoint, with a sidecar whose sha256 matches it:
    it is refused (it is not safetensors), the marker file its unpickling would create never
    appears, and the previous checkpoint is used."""
    config = _config(steps=4, checkpoint_every=2)
    train(config, tmp_path, resolve_data(config).train, device="cpu", progress=False)
    marker = tmp_path / "UNPICKLED"
    forged = tmp_path / "ckpt" / "step-00000006.safetensors"
    if protocol == "torch.save":
        torch.save({"x": _Payload(marker)}, forged)
    else:
        forged.write_bytes(pickle.dumps(_Payload(marker), protocol=protocol))
    side = json.loads((tmp_path / "ckpt" / "step-00000004.json").read_text())
    side.update(step=6, sha256=sha256_file(forged))
    forged.with_suffix(".json").write_text(json.dumps(side))
    msgs = []
    found = latest_training_checkpoint(tmp_path / "ckpt", log=msgs.append)
    assert found[1]["step"] == 4 and "step-00000006" in msgs[0]
    with pytest.raises(CheckpointError, match="never unpickles|not a valid safetensors"):
        load_tensors(forged)
    assert not marker.exists()


def test_pickle_as_model_file_is_refused_by_the_cli(tmp_path, capsys):
    config = _config(steps=2, checkpoint_every=2)
    run_dir = tmp_path / "run"
    train(config, run_dir, resolve_data(config).train, device="cpu", progress=False)
    marker = tmp_path / "UNPICKLED"
    (run_dir / "model.safetensors").write_bytes(pickle.dumps(_Payload(marker), protocol=4))
    from PIL import Image

    Image.new("RGB", (16, 16)).save(tmp_path / "x.png")
    assert main(["classify", str(tmp_path / "x.png"), "--run", str(run_dir), "--device", "cpu"]) == 2
    assert "never unpickles" in capsys.readouterr().err
    assert not marker.exists()


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path):
    """The run diverges after good checkpoints exist: training stops naming the last good step,
    that checkpoint is intact and finite, nothing claims the run finished."""
    config, data = _config(), resolve_data(_config())
    train(config, tmp_path, data.train, device="cpu", progress=False, stop_after=3)
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* last good checkpoint \(step \d+\)") as err:
        train(_config(lr=1e30), tmp_path, data.train, device="cpu", progress=False)
    good = int(str(err.value).split("(step ")[1].split(")")[0])
    assert good >= 3
    tensors, meta = latest_training_checkpoint(tmp_path / "ckpt")
    assert meta["step"] == good
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model/"))
    assert not (tmp_path / "model.safetensors").exists()
    assert not json.loads((tmp_path / "state.json").read_text())["finished"]


def test_a_second_process_waits_for_the_first_instead_of_training_the_same_run(tmp_path, uninterrupted):
    """Two processes asked for the same run (a chapter and a ``cdn train``, or two book builds) never write
    into it together: while this process holds the run's lock and trains, a child asked for the same run
    waits, then takes the finished run without training a step of it."""
    from cdn.train import _train, run_lock

    run_dir = tmp_path / "run"
    config = _config()
    with run_lock(run_dir):
        child = _child(run_dir)
        seen = []
        while not any("waiting for it" in line for line in seen):  # the child is blocked on the lock
            line = child.stdout.readline()
            assert line, f"the child ended without waiting: {seen} {child.communicate()}"
            seen.append(line)
        assert not (run_dir / "ckpt").exists()  # and it wrote nothing
        state = _train(config, run_dir, resolve_data(config).train, device="cpu", progress=False)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    assert "another process is training run; waiting for it" in "".join(seen)
    assert json.loads(out) == state and state["finished"] and state["step"] == SETTINGS["steps"]
    assert _same(load_file(str(run_dir / "model.safetensors")), uninterrupted)
    assert [r["step"] for r in read_log(run_dir)] == list(range(1, SETTINGS["steps"] + 1))
