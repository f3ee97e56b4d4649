"""Data-parallel training: two gloo processes on CPU reach the weights of one process on the same
global batch.

How the comparison is made honest. Under DDP every rank draws its augmentation and noise from its
own generator, seeded ``rank_seed(seed, rank)``; so a 2-process run does not draw the same noise as
a plain 1-process run (it cannot, without every rank drawing the whole batch's noise). The
reference is therefore one process that does, on the *same global batch* (the same permutation
slice of ``batch_size`` images), what DDP claims to do: split it into the two ranks' halves,
augment and noise each half with that rank's generator, the gradient of the mean of the two
halves' losses, clip, one AdamW step. It is written here from the package's parts, independently
of ``train``; its 1-shard case is checked bit for bit against ``train`` in one process, so the
reference is the training loop. What the 2-process comparison then tests is DDP itself: sharding
by rank, the gradient all-reduce (averaging) through the double backward of the joint loss, the
generator per rank, checkpoints by rank 0.

The gradient of the mean loss is computed as DDP computes it, one backward per shard and the
average ``sum(g_r / W)``, not as one backward of ``mean(loss_r)``: the two are the same
mathematics and agree to rounding (their gradients are compared, within 1e-6 of the largest entry), but AdamW divides by
``sqrt(v)``, which blows up rounding differences in near-zero gradients step after step (measured:
7e-9 after 1 step, 9e-6 after 4, 2.5e-3 after 16). With per-shard backwards the 2-process weights
agree with the reference to the bit in practice; the test asserts 1e-5.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cdn import distributed as D
from cdn.cli import main
from cdn.data import augment, epoch_permutation
from cdn.profiles import FIRST_JOINT_SETTINGS, get_config
from cdn.runs import resolve_data
from cdn.train import make_optimizer, lr_at, make_loss, make_net, read_log, train

REPO = Path(__file__).resolve().parent.parent
K = 4
# precision pinned: the reference below computes in float32, while "auto" is bf16 on a CPU with a bf16
# unit (AMX, AVX512-BF16): unpinned, the comparison held only on CPUs without one
SETTINGS = dict(width=4, steps=K, train_size=64, batch_size=8, checkpoint_every=2, log_every=2, warmup_steps=1,
                precision="float32")



@pytest.fixture(autouse=True)
def _one_thread(monkeypatch):
    """Bitwise comparisons need one reduction order: one CPU thread here and in every child process
    (``cdn.train.set_cpu_threads`` and torchrun's workers read OMP_NUM_THREADS). With 2 threads the
    in-process reference and the training loop differed in the last bits (seen on the CI machine)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

def _config():
    return get_config("smoke", "gradresnet", "synthetic", **SETTINGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference(config, train_set, world_size: int, steps: int, one_backward: bool = False,
              first_gradient: bool = False) -> dict:
    """One process, the global batch split into ``world_size`` shards with the ranks' generators,
    the gradient of the mean of the shards' losses (a backward per shard and the average, or with
    ``one_backward`` a single backward of the mean; with one shard ``loss.backward()`` as in the training
    loop, since ``autograd.grad`` may sum a parameter's contributions in another order), one optimiser
    step per step. Returns the weights after ``steps`` steps, or with ``first_gradient`` the first step's
    gradient (before clipping), by parameter name."""
    torch.manual_seed(0)
    net = make_net(config, train_set.num_classes, train_set.in_channels)
    from cdn.joint import JointModel

    model, loss_fn = JointModel(net), make_loss(config)
    opt = make_optimizer(net, config, torch.device("cpu"))
    gens = [torch.Generator().manual_seed(D.rank_seed(config.seed, r)) for r in range(world_size)]
    n, bs = len(train_set), config.batch_size
    per_epoch, local = n // bs, bs // world_size
    for step in range(steps):
        epoch, i = divmod(step, per_epoch)
        batch = epoch_permutation(n, epoch, config.seed)[i * bs:(i + 1) * bs]
        losses = []
        for r in range(world_size):
            idx = batch[r * local:(r + 1) * local]
            x = train_set.images[idx].float().div_(255)
            if config.augment:
                x = augment(x, gens[r])
            losses.append(loss_fn(model, x, train_set.labels[idx], gens[r])[0])
        for g in opt.param_groups:
            g["lr"] = lr_at(step, config)
        params = list(net.parameters())
        if world_size == 1:  # exactly the training loop's call: the engine's summation order differs
            opt.zero_grad(set_to_none=True)  # between backward() and autograd.grad in the last bits
            losses[0].backward()
            grads = [p.grad for p in params]
        elif one_backward:
            grads = torch.autograd.grad(torch.stack(losses).mean(), params)
        else:
            per_shard = [torch.autograd.grad(loss, params) for loss in losses]
            grads = [sum(g[j] / world_size for g in per_shard) for j in range(len(params))]
        if first_gradient:
            return {name: g.detach().clone() for (name, _), g in zip(net.named_parameters(), grads)}
        for p, g in zip(params, grads):
            p.grad = g
        torch.nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
        opt.step()
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_reference_with_one_shard_is_the_training_loop(tmp_path):
    config = _config()
    data = resolve_data(config)
    train(config, tmp_path, data.train, device="cpu", progress=False)
    got = load_file(str(tmp_path / "model.safetensors"))
    want = reference(config, data.train, 1, K)
    assert all(torch.equal(got[k], want[k]) for k in want)


def _torchrun(runs: Path, settings: dict) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
            "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cdn", "train", "--profile", "smoke",
            "--dataset", "synthetic", "--device", "cpu", "--no-progress", "--no-eval", "--runs", str(runs),
            "--set", *[f"{k}={v}" for k, v in settings.items()]]


ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    config = _config()
    data = resolve_data(config)
    out = subprocess.run(_torchrun(tmp_path, SETTINGS), env=ENV, cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    run_dir = tmp_path / config.run_name()
    got = load_file(str(run_dir / "model.safetensors"))
    want = reference(config, data.train, 2, K)
    init = make_net(config, data.train.num_classes, data.train.in_channels).state_dict()
    moved = max((want[k] - init[k]).abs().max().item() for k in want)
    assert moved > 1e-3  # the weights did move, so the comparison below means something
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5, msg=k)
    # a single backward of the mean loss is the same gradient up to float32 rounding, for the default loss and for
    # the first settings; compared as gradients (AdamW's division by sqrt(v) would turn rounding in near-zero
    # gradients into weight differences whose size depends on the loss), relative to the largest gradient entry
    for settings in ({}, FIRST_JOINT_SETTINGS):
        loss_config = dataclasses.replace(config, **settings)
        once = reference(loss_config, data.train, 2, 1, one_backward=True, first_gradient=True)
        per = reference(loss_config, data.train, 2, 1, first_gradient=True)
        scale = max(g.abs().max().item() for g in per.values())
        assert scale > 0
        worst = max((once[k] - per[k]).abs().max().item() for k in per) / scale
        assert worst < 1e-6, (settings, worst)  # measured 5e-8 to 1e-7 under the kernels of make test
    # one process with one generator (another noise stream) is not what the two ranks computed
    one = reference(config, data.train, 1, K)
    assert max((one[k] - got[k]).abs().max().item() for k in one) > 1e-4
    # rank 0 alone wrote the log and the checkpoints; the checkpoint holds both ranks' generators
    ckpt = load_file(str(run_dir / "ckpt" / f"step-{K:08d}.safetensors"))
    assert "rng/generator" in ckpt and "rng/generator.1" in ckpt
    assert not torch.equal(ckpt["rng/generator"], ckpt["rng/generator.1"])
    assert [row["step"] for row in read_log(run_dir)] == [2, 4]  # one row per log step, not one per rank


def test_rank_seeds_and_shards():
    assert D.rank_seed(5, 0) == 5
    seeds = {D.rank_seed(s, r) for s in range(4) for r in range(1, 8)}
    assert len(seeds) == 28 and not seeds & set(range(4))
    batch = torch.arange(8)
    halves = [D.shard(batch, D.DistInfo(r, 2)) for r in range(2)]
    assert torch.equal(torch.cat(halves), batch)
    with pytest.raises(ValueError, match="divisible by the number of processes 3"):
        D.shard(batch, D.DistInfo(0, 3))


def test_distributed_without_a_launcher_is_a_clear_error(capsys, monkeypatch, tmp_path):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert main(["train", "--profile", "smoke", "--dataset", "synthetic", "--distributed", "--runs", str(tmp_path),
                 "--device", "cpu"]) == 2
    assert "torchrun --nproc_per_node" in capsys.readouterr().err


def test_preempted_data_parallel_run_resumes_exactly(tmp_path):
    """SIGTERM to torchrun (a scheduler's preemption): torchrun forwards it to both workers, which
    agree to stop after the same step, and rank 0 writes a checkpoint holding both ranks'
    generators. (torchrun itself then exits non-zero with its own SignalException; the workers
    exit cleanly.) The same command resumes, and the weights equal the 2-shard reference."""
    import signal
    import time

    settings = dict(SETTINGS, steps=10, checkpoint_every=1, log_every=1)
    config = get_config("smoke", "gradresnet", "synthetic", **settings)
    run_dir = tmp_path / config.run_name()
    proc = subprocess.Popen(_torchrun(tmp_path, settings), env=ENV, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    t0 = time.time()
    while not list((run_dir / "ckpt").glob("step-*.json")):
        assert proc.poll() is None and time.time() - t0 < 120, proc.communicate()[0][-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert "SIGTERM: saved checkpoint of step" in out, out[-3000:]
    state = json.loads((run_dir / "state.json").read_text())
    assert state["preempted"] and not state["finished"] and state["world_size"] == 2
    assert state["step"] < settings["steps"]
    side = json.loads((run_dir / "ckpt" / f"step-{state['step']:08d}.json").read_text())
    assert side["world_size"] == 2
    done = subprocess.run(_torchrun(tmp_path, settings), env=ENV, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(str(run_dir / "model.safetensors"))
    want = reference(config, resolve_data(config).train, 2, settings["steps"])
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5, msg=k)
    assert [row["step"] for row in read_log(run_dir)] == list(range(1, settings["steps"] + 1))


def test_double_backward_under_ddp(monkeypatch):
    """In one gloo process (world size 1, DDP's reducer still in place): the input-gradient of the
    joint loss (``autograd.grad`` w.r.t. y, ``create_graph=True``) sends no bucket to the all-reduce
    and leaves every ``.grad`` empty; ``loss.backward()`` then all-reduces every parameter's gradient
    once, equal to the gradient without DDP."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cdn.joint import JointModel

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    config = _config()
    data = resolve_data(config)
    x, c = data.train.images[:4].float() / 255, data.train.labels[:4]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        net = make_net(config, data.train.num_classes, data.train.in_channels)
        plain = make_net(config, data.train.num_classes, data.train.in_channels)
        ddp = DistributedDataParallel(net)
        sent = []

        def hook(state, bucket):
            sent.append(bucket.buffer().numel())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, hook)
        loss_fn = make_loss(config)
        loss, _ = loss_fn(JointModel(ddp), x, c, torch.Generator().manual_seed(1))
        assert sent == [] and all(p.grad is None for p in net.parameters())
        loss.backward()
        assert sum(sent) == sum(p.numel() for p in net.parameters())  # every parameter, once
        want, _ = loss_fn(JointModel(plain), x, c, torch.Generator().manual_seed(1))
        want.backward()
        for p, q in zip(net.parameters(), plain.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-7)
    finally:
        dist.destroy_process_group()



EVAL_SCRIPT = """
import json, sys
from cdn import distributed as D
from cdn.evaluate import classification_vs_sigma, joint_denoisers, psnr_vs_sigma
from cdn.runs import load_run, resolve_data
info, device = D.init("cpu")
run = load_run(sys.argv[1], device)
test = resolve_data(run.config).test
out = {"rank_batches": list(D.my_batches(4, info)),
       "classification": classification_vs_sigma(run.model, test, batch_size=24, device=device),
       "denoising": psnr_vs_sigma(joint_denoisers(run.model, test.num_classes), test, batch_size=24, device=device)}
json.dump(out, open(sys.argv[2] + f".{info.rank}", "w"))
D.cleanup()
"""


def _close(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for k in w:
            assert abs(g[k] - w[k]) < 1e-9, (k, g[k], w[k])


def test_two_gloo_processes_evaluate_the_whole_test_set_as_one_process(tmp_path):
    """Evaluation under torch.distributed: each rank evaluates every other test batch and the
    results are gathered, so every rank returns the metrics one process computes on the whole test
    set. Then end to end: `torchrun -m cdn train` evaluates on both ranks and rank 0 alone prints and
    writes metrics.json, equal to one process's evaluation."""
    from cdn.evaluate import classification_vs_sigma, joint_denoisers, psnr_vs_sigma
    from cdn.runs import load_run

    settings = dict(SETTINGS, steps=2, test_size=96)
    config = get_config("smoke", "gradresnet", "synthetic", **settings)
    cmd = [c for c in _torchrun(tmp_path, settings) if c != "--no-eval"]
    out = subprocess.run(cmd, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    assert out.stdout.count("accuracy=") == 7, out.stdout[-3000:]  # rank 0 alone printed (7 sigmas)
    run_dir = tmp_path / config.run_name()
    run = load_run(run_dir, "cpu")
    test = resolve_data(config).test
    assert len(test) == 96
    want_cls = classification_vs_sigma(run.model, test, device="cpu")
    want_psnr = psnr_vs_sigma(joint_denoisers(run.model, test.num_classes), test, device="cpu")
    got = json.loads((run_dir / "metrics.json").read_text())
    _close(got["classification"], want_cls)
    _close(got["denoising"], want_psnr)

    # 4 batches of 24 split 2 + 2 between the ranks: both ranks return the whole set's metrics
    script = tmp_path / "eval_script.py"
    script.write_text(EVAL_SCRIPT)
    res = tmp_path / "eval.json"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
              "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(run_dir), str(res)]
    out = subprocess.run(launch, env=ENV, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"eval.json.{r}").read_text()) for r in range(2)]
    assert [r["rank_batches"] for r in ranks] == [[0, 2], [1, 3]]
    want_cls = classification_vs_sigma(run.model, test, batch_size=24, device="cpu")
    want_psnr = psnr_vs_sigma(joint_denoisers(run.model, test.num_classes), test, batch_size=24, device="cpu")
    for r in ranks:
        _close(r["classification"], want_cls)
        _close(r["denoising"], want_psnr)
