"""Data-parallel training: two gloo processes on CPU reach the weights of one process on the same
global batch.

How the comparison is made honest. Under DDP every rank draws its augmentation and noise from its
own generator, seeded ``rank_seed(seed, rank)``; so a 2-process run does not draw the same noise as
a plain 1-process run (it cannot, without every rank drawing the whole batch's noise). The
reference is therefore one process that does, on the *same global batch* (the same permutation
slice of ``batch_size`` images), what DDP claims to do: split it into the two ranks' halves,
augment and noise each half with that rank's generator, take the mean of the two halves' losses,
one backward, clip, one AdamW step. It is written here from the package's parts, independently of
``train``; its 1-shard case is checked bit for bit against ``train`` in one process, so the
reference is the training loop. What the 2-process comparison then tests is DDP itself: sharding
by rank, the gradient all-reduce (averaging) through the double backward of the joint loss, the
generator per rank, checkpoints by rank 0. Agreement is within 1e-5 (not bitwise: the all-reduce
sums in another order).
"""
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
from cdn.profiles import get_config
from cdn.runs import resolve_data
from cdn.train import _optimizer, lr_at, make_loss, make_net, read_log, train

REPO = Path(__file__).resolve().parent.parent
K = 4
SETTINGS = dict(width=4, steps=K, train_size=64, batch_size=8, checkpoint_every=2, log_every=2, warmup_steps=1)


def _config():
    return get_config("smoke", "gradresnet", "synthetic", **SETTINGS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reference(config, train_set, world_size: int, steps: int) -> dict:
    """One process, the global batch split into ``world_size`` shards with the ranks' generators,
    the mean of the shards' losses, one backward and one optimiser step per step."""
    torch.manual_seed(0)
    net = make_net(config, train_set.num_classes, train_set.in_channels)
    from cdn.joint import JointModel

    model, loss_fn = JointModel(net), make_loss(config)
    opt = _optimizer(net, config, torch.device("cpu"))
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
        opt.zero_grad(set_to_none=True)
        torch.stack(losses).mean().backward()
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


def test_two_gloo_processes_equal_one_process_on_the_same_global_batch(tmp_path):
    config = _config()
    data = resolve_data(config)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cdn", "train", "--profile", "smoke",
           "--dataset", "synthetic", "--device", "cpu", "--no-progress", "--no-eval", "--runs", str(tmp_path),
           "--set", *[f"{k}={v}" for k, v in SETTINGS.items()]]
    out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    run_dir = tmp_path / config.run_name()
    got = load_file(str(run_dir / "model.safetensors"))
    want = reference(config, data.train, 2, K)
    init = make_net(config, data.train.num_classes, data.train.in_channels).state_dict()
    moved = max((want[k] - init[k]).abs().max().item() for k in want)
    assert moved > 1e-3  # the weights did move, so the comparison below means something
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5, msg=k)
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
