"""One training loop for the joint model and every baseline (chapter "Training the joint model").

AdamW (fused on GPU), linear warm-up then cosine decay over the steps or, with
``config.time_budget_s``, over the training seconds (the run ends when they are spent), an optional
exponential moving average of the weights (``config.ema_decay``), gradient clipping, bf16 autocast and
channels_last on GPU, a tqdm bar, a JSON-lines log, atomic checkpoints every
``checkpoint_every`` steps, and exact resume: the model, optimiser, generator state and the
data order (a function of seed and epoch) are restored, so N steps in one go equal N/2 steps, a
stop, a resume and N/2 more; and a SIGKILL at any moment, then a resume, equals an uninterrupted
run. SIGTERM saves a checkpoint and returns. Data-parallel over ``torch.distributed`` when a
process group is initialised (``cdn.distributed``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed as D
from .checkpoint import (CheckpointError, atomic_save_tensors, atomic_write_text, latest_training_checkpoint,
                         load_training_checkpoint, remove_stale_tmp, restore_training_checkpoint,
                         save_training_checkpoint)
from .data import ImageDataset, epoch_permutation, fast_batch
from .joint import JointModel
from .losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss, SigmaSampler
from .mollify import MollifyLoss
from .nets import VARIANTS, build_net, second_order
from .nets.resnet import FEATURE_ENERGY_HEADS
from .nets.second_order import second_order_layers, use_second_order
from .profiles import Config
from .provenance import device_description, git_commit


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_net(config: Config, num_classes: int, in_channels: int) -> torch.nn.Module:
    """The network of ``config``, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    net = build_net(config.arch, num_classes, in_channels, config.width, config.noise_conditioning)
    if config.precision == "bf16-all" and hasattr(net, "score_in_float32"):
        net.score_in_float32 = False
    if config.input_scaling:
        if not hasattr(net, "input_scaling"):
            raise ValueError(f"input_scaling needs a GradResNet architecture, got {config.arch!r}")
        net.input_scaling = True
    return net


def make_loss(config: Config):
    """The objective of ``config``: ``JointLoss``, ``CrossEntropyLoss`` (with or without noise
    augmentation), ``MollifyLoss`` (``cdn.mollify``, the paper's default setting) or
    ``DenoisingMSELoss``."""
    sampler = SigmaSampler(config.sigma_min, config.sigma_max, config.sigma_distribution, config.clean_fraction)
    if config.objective == "joint":
        return JointLoss(sampler, config.lam, config.weighting, config.dsm_conditional, config.ce_on)
    if config.objective == "dsm_conditional":
        return JointLoss(sampler, config.lam, config.weighting, dsm_conditional=True, ce_weight=0.0)
    if config.objective == "ce":
        return CrossEntropyLoss(None)
    if config.objective == "ce_noisy":
        if config.ce_on == "clean":
            raise ValueError("cross-entropy on the joint model's noisy images (ce_noisy) takes ce_on 'noisy' or "
                             "'both'; for clean images alone use the model gradresnet-ce")
        return CrossEntropyLoss(sampler, also_clean=config.ce_on == "both")
    if config.objective == "ce_noise":
        return CrossEntropyLoss(SigmaSampler(1e-3, config.noise_sigma_max, "uniform", clean_fraction=0.2))
    if config.objective == "mollify":
        return MollifyLoss()
    return DenoisingMSELoss(sampler, config.weighting)


def lr_at(step: int, config: Config, elapsed_s: float | None = None) -> float:
    """Learning rate of ``step``: linear warm-up to ``lr`` over ``warmup_steps``, then cosine decay to 0
    at ``config.steps``. With ``config.time_budget_s``, the cosine is a function of the fraction of the
    budget spent, ``elapsed_s / time_budget_s`` (``elapsed_s`` required: the training seconds before
    this step), times the warm-up ramp, so it reaches 0 when the budget is spent."""
    if config.time_budget_s is not None:
        if elapsed_s is None:
            raise ValueError("elapsed_s is required when config.time_budget_s is set")
        ramp = min(1.0, (step + 1) / config.warmup_steps)
        return config.lr * ramp * 0.5 * (1 + math.cos(math.pi * min(1.0, elapsed_s / config.time_budget_s)))
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    t = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def ema_decay_at(step: int, config: Config) -> float:
    """The decay of the weights' moving average after optimiser step ``step`` (0-based):
    ``min(ema_decay, (1 + step) / (10 + step))``, a ramp-up (as EDM's) so that the random
    initialisation is forgotten early in short runs."""
    return min(config.ema_decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], net: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * weights`` for every floating tensor of ``net.state_dict()``
    (parameters and float buffers); integer buffers are copied."""
    for k, v in net.state_dict().items():
        if v.is_floating_point():
            ema[k].lerp_(v, 1.0 - decay)
        else:
            ema[k].copy_(v)


#: the /proc/cpuinfo flags of a bf16 unit that makes bf16 faster than float32 on every CPU measured: AMX tiles
#: (an Intel Xeon: a 2048x2048 matmul 1,800 GFLOP/s in bf16 against about 250 in float32, 2 threads)
FAST_BF16_CPU_FLAGS = ("amx_bf16",)
#: a bf16 unit that is faster than float32 only on some vendors' cores, AVX512-BF16: on an AMD EPYC (Zen 4) 925
#: against 222 GFLOP/s; on an Intel Xeon (model 207) without AMX 148 against 263, slower than float32
#: (results/bench-roofline-xeon-noamx-2core.json), so it counts only with the vendors of ``FAST_AVX512_BF16_VENDORS``
AVX512_BF16_FLAG = "avx512_bf16"
FAST_AVX512_BF16_VENDORS = ("AuthenticAMD",)


def cpu_has_fast_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU computes bf16 faster than float32: AMX tiles (``FAST_BF16_CPU_FLAGS``) among the ``flags``
    of ``/proc/cpuinfo`` (or of the ``cpuinfo`` text given), or AVX512-BF16 on a CPU whose ``vendor_id`` is one
    of ``FAST_AVX512_BF16_VENDORS``. False where the file cannot be read; without a bf16 unit torch emulates
    bf16 and a joint step is many times slower than in float32 (README, "Design choices")."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags, vendor = None, None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and flags is None:
            flags = set(value.split())
        elif key.strip() == "vendor_id" and vendor is None:
            vendor = value.strip()
    if not flags:
        return False
    return (any(flag in flags for flag in FAST_BF16_CPU_FLAGS)
            or (AVX512_BF16_FLAG in flags and vendor in FAST_AVX512_BF16_VENDORS))




def autocast_bf16(config: Config, device: torch.device) -> bool:
    """Whether the training step runs under bf16 autocast: ``config.precision`` 'bf16' (or 'bf16-all'),
    or 'auto' on a GPU or on a CPU with a bf16 unit (``cpu_has_fast_bf16``) unless the architecture's
    head is one of ``FEATURE_ENERGY_HEADS`` (the default joint model's: under bf16 autocast the score of an
    energy built from feature maps is 1-3% off float32's, ``cdn.experiments.joint_search``); float32 elsewhere. The
    network's score path (input layer, energy, head) stays float32 under autocast (chapter 10 measures
    that this keeps the score right); ``state.json`` records the precision a run trained in."""
    if config.precision in ("bf16", "bf16-all"):
        return True
    if config.precision != "auto":
        return False
    if VARIANTS.get(config.arch, {}).get("head") in FEATURE_ENERGY_HEADS:
        return False
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())


def resumed_autocast(config: Config, device: torch.device, recorded: str | None) -> bool:
    """The precision a resumed run continues in: the one its checkpoint recorded (``recorded``, 'bf16' or
    'float32'; None for checkpoints older than the record), so that one run never mixes two precisions.
    'auto' is resolved once, when the run starts (``autocast_bf16``), and kept on every later machine;
    an explicit precision that contradicts the record is a ``ValueError``."""
    chosen = autocast_bf16(config, device)
    if recorded is None:
        return chosen
    if recorded not in ("bf16", "float32"):
        raise ValueError(f"the checkpoint records autocast {recorded!r}; expected 'bf16' or 'float32'")
    if config.precision != "auto" and (recorded == "bf16") != chosen:
        raise ValueError(f"the checkpoint was trained in {recorded} but precision={config.precision!r} asks for "
                         f"{'bf16' if chosen else 'float32'}; a run is trained in one precision")
    return recorded == "bf16"


def train_step(target, loss_fn, optimizer: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor, generator,
               *, lr: float | None = None, use_amp: bool = False, fast_second_order: bool = False,
               grad_clip: float = 0.0, check=None, params=None):
    """One optimisation step, the one every training loop runs (``train``, the Efficiency race, JEM's update
    through ``apply_update``, the benchmarks): set ``lr``; ``loss, terms = loss_fn(target, x, c, generator)``
    under bf16 autocast when ``use_amp``, with the closed-form second derivatives of
    ``cdn.nets.second_order`` when ``fast_second_order``; ``check(loss)``, which raises to stop before the
    update (a non-finite loss); then ``apply_update`` (``params``: the parameters whose gradient norm is clipped, in the
    order of the sum, e.g. ``net.parameters()``). Returns ``(loss, terms)``."""
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp), second_order_layers(fast_second_order):
        loss, terms = loss_fn(target, x, c, generator)
    if check is not None:
        check(loss)
    apply_update(loss, optimizer, grad_clip, params)
    return loss, terms


def apply_update(loss: torch.Tensor, optimizer: torch.optim.Optimizer, grad_clip: float = 0.0, params=None) -> None:
    """``zero_grad``, ``loss.backward()``, clip the norm of the gradient of ``params`` (default: the optimiser's,
    group by group; the order of the sum sets the last bits) to ``grad_clip`` (when > 0), ``optimizer.step()``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        params = [p for g in optimizer.param_groups for p in g["params"]] if params is None else params
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()


def term_gradient_norms(loss_fn, net: torch.nn.Module, x: torch.Tensor, c: torch.Tensor, seed: int, step: int) -> dict:
    """``loss_fn.gradient_norms`` on the batch ``(x, c)`` with noise of its own (a generator seeded by
    ``seed`` and ``step``) and the network's buffers restored afterwards: the training run's weights,
    optimiser, noise stream and BatchNorm statistics are the same with or without it."""
    buffers = {k: v.clone() for k, v in net.named_buffers()}
    generator = torch.Generator(device=x.device).manual_seed(seed * 1_000_003 + step)
    try:
        return loss_fn.gradient_norms(JointModel(net), x, c, generator)
    finally:
        with torch.no_grad():
            for k, v in net.named_buffers():
                v.copy_(buffers[k])


#: gradient-norm balancing (``Config.lam_balance_every``): the fraction of the way, in log space, that lam moves
#: toward the balanced value at each measurement (about ten measurements of memory: one batch's ratio is noisy)
LAM_BALANCE_RATE = 0.1


def balanced_lam(lam: float, grad_ce: float, grad_lam_dsm: float, rate: float = LAM_BALANCE_RATE) -> float:
    """One step of gradient-norm balancing: ``log lam <- (1 - rate) log lam + rate log lam*`` with
    ``lam* = lam ||grad_theta CE|| / ||grad_theta lam DSM||``, the weight at which the two terms' parameter gradients
    have the same norm on the measured batch. Raises ``ValueError`` unless every input is finite and > 0."""
    if not all(math.isfinite(v) and v > 0 for v in (lam, grad_ce, grad_lam_dsm)) or not 0 < rate <= 1:
        raise ValueError(f"gradient-norm balancing needs lam, ||grad CE||, ||grad lam DSM|| finite and > 0 and a rate in "
                         f"(0, 1]; got {lam!r}, {grad_ce!r}, {grad_lam_dsm!r}, {rate!r}")
    return math.exp((1 - rate) * math.log(lam) + rate * math.log(lam * grad_ce / grad_lam_dsm))


#: glibc's ``mallopt`` parameters (malloc.h) and the values ``tune_allocator`` sets: 32 MiB, the largest mmap
#: threshold glibc accepts on a 64-bit machine, and a trim threshold of 1 GiB
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD, TRIM_THRESHOLD = 32 << 20, 1 << 30


def tune_allocator() -> str:
    """Keep freed memory in the process instead of handing it back to the system: glibc's ``malloc`` serves a
    block above its mmap threshold (at first 128 KiB) by ``mmap`` and unmaps it when freed, and trims the heap
    when its free top exceeds the trim threshold, so a training step that frees and reallocates its activations
    can page-fault them all back in. glibc moves both thresholds as blocks are freed, so whether it does varies from
    one launch to the next (measured on the default joint step, AMD EPYC, 2 threads: 16,042, 16,335 and 23,031
    minor faults a step in three launches, 1 in a fourth; 45-73 ms of system time a step when it faults).
    Sets ``M_MMAP_THRESHOLD`` to ``MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` to ``TRIM_THRESHOLD``; the numbers
    computed do not change (tests/test_allocator.py). Returns what it did:
    ``"glibc mmap 32 MiB, trim 1024 MiB"``, or ``"plain"`` where the C library is not glibc."""
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "plain"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "plain"
    return f"glibc mmap {MMAP_THRESHOLD >> 20} MiB, trim {TRIM_THRESHOLD >> 20} MiB"


def set_cpu_threads() -> None:
    """One thread per available core (2 on the project's CI machine), or ``$OMP_NUM_THREADS`` when
    set: two processes with 2 threads each on 2 cores run many times slower than with 1 each."""
    import os

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        n = int(os.environ["OMP_NUM_THREADS"])
    torch.set_num_threads(max(1, n))


def make_optimizer(net: torch.nn.Module, config: Config, device: torch.device) -> torch.optim.Optimizer:
    """AdamW (fused on GPU) with weight decay on the weights (ndim >= 2) and none on biases and norm
    gains; the one optimiser of every model (``train``, JEM, the Efficiency chapter's race)."""
    decay = [p for p in net.parameters() if p.ndim >= 2]
    no_decay = [p for p in net.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.999), fused=device.type == "cuda")


@contextlib.contextmanager
def run_lock(run_dir: str | Path):
    """Hold an exclusive lock on ``run_dir`` (``fcntl.flock`` on ``run_dir/.lock``) for the block: a second
    process that trains the same run (two chapters or a ``cdn train`` beside a book build, each resuming
    from the same checkpoint) waits for the first instead of writing into the same files. Yields True
    when it had to wait. No lock where ``fcntl`` is missing (Windows)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield False
        return
    with open(run_dir / ".lock", "a") as f:
        waited = False
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"[cdn] another process is training {run_dir.name}; waiting for it", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
            waited = True
        try:
            yield waited
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def train(config: Config, run_dir: str | Path, train_set: ImageDataset, device=None,
          progress: bool | None = None, stop_after: int | None = None) -> dict:
    """Train ``config`` on ``train_set`` in ``run_dir``, resuming from its newest good checkpoint.

    Writes ``config.json``, ``log.jsonl``, ``ckpt/step-*.safetensors`` and, when all ``config.steps``
    are done (or, with ``config.time_budget_s``, when the training seconds are spent; ``steps`` is then
    an upper bound), ``model.safetensors`` and ``state.json`` (``finished: true``). With
    ``config.ema_decay`` the moving average of the weights is kept in every checkpoint and is what
    ``model.safetensors`` holds (the weights every chapter evaluates). ``stop_after`` ends the
    call after that many total steps with a checkpoint (an interruption, for tests and long runs).
    Returns the final state dict. Raises ``FloatingPointError`` on a non-finite loss, keeping the last
    good checkpoint.

    Faults: a SIGTERM (a scheduler's preemption) ends the call after the current step with a
    checkpoint and ``state["preempted"] = True``; a SIGKILL at any moment loses at most the steps
    since the last checkpoint, and the resumed run reaches the same weights bit for bit (CPU; a
    time-budget run resumes its schedule from the seconds its checkpoint recorded, but its learning
    rates follow the clock, so it is not bit-exact).

    When a ``torch.distributed`` process group is initialised (``cdn.distributed.init``, torchrun),
    this runs data-parallel: each rank its shard of every global batch, gradients averaged by
    ``DistributedDataParallel``, rank 0 writing the log and checkpoints (see ``cdn.distributed``).

    A single process holds ``run_lock(run_dir)`` while it trains; one that had to wait for another
    process training the same run returns that run's state when it finished (and resumes it otherwise)."""
    if D.current().world_size > 1:
        return _train(config, run_dir, train_set, device, progress, stop_after)
    with run_lock(run_dir) as waited:
        state_path = Path(run_dir) / "state.json"
        if waited and state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("finished"):
                return state
        return _train(config, run_dir, train_set, device, progress, stop_after)


def _train(config: Config, run_dir: str | Path, train_set: ImageDataset, device=None,
           progress: bool | None = None, stop_after: int | None = None) -> dict:
    """``train`` without the lock: the training loop itself."""
    run_dir = Path(run_dir)
    info = D.current()
    device = torch.device(device) if device is not None else default_device()
    allocator = "plain"
    if device.type == "cpu":
        set_cpu_threads()
        allocator = tune_allocator()
    if config.batch_size > len(train_set):
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set ({len(train_set)} images)")
    if config.batch_size % info.world_size:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the number of processes "
                         f"{info.world_size} (the global batch is split evenly across ranks)")
    main = info.is_main
    commit = machine = None
    if main:
        commit, machine = git_commit(), device_description(device)
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", json.dumps(config.to_dict(), indent=1))
        remove_stale_tmp(run_dir / "ckpt")

    net = make_net(config, train_set.num_classes, train_set.in_channels).to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    loss_fn = make_loss(config)
    optimizer = make_optimizer(net, config, device)
    generator = torch.Generator(device=device).manual_seed(D.rank_seed(config.seed, info.rank))
    # the moving average starts from the initial weights (as EDM's)
    ema = None if config.ema_decay is None else {k: v.detach().clone() for k, v in net.state_dict().items()}
    start, elapsed = 0, 0.0
    found = None
    if main:
        found = latest_training_checkpoint(run_dir / "ckpt", log=lambda m: print(f"[cdn] {m}"))
    step0 = D.broadcast_int(found[1]["step"] if found is not None else 0, info, device)
    if step0 > 0 and not main:
        found = load_training_checkpoint(run_dir / "ckpt", step0)
    if found is not None:
        tensors, meta = found
        start = restore_training_checkpoint(tensors, meta, net, optimizer, generator, info.rank)
        elapsed = float(meta.get("elapsed_s", 0.0))
        if config.lam_balance_every:
            if "lam" not in meta:
                raise CheckpointError(f"the checkpoint of step {start} in {run_dir / 'ckpt'} has no balanced lam, "
                                      "which config.lam_balance_every needs to resume exactly")
            loss_fn = dataclasses.replace(loss_fn, lam=float(meta["lam"]))
        if ema is not None:
            saved = {k[len("ema/"):]: v for k, v in tensors.items() if k.startswith("ema/")}
            if saved.keys() != ema.keys():
                raise CheckpointError(f"the checkpoint of step {start} in {run_dir / 'ckpt'} has no complete moving "
                                      "average of the weights (ema/*), which config.ema_decay needs")
            ema = {k: v.to(device) for k, v in saved.items()}
        if int(meta.get("world_size", 1)) != info.world_size:
            # another world size: the data order and weights are exact, the noise streams are new
            generator.manual_seed(D.rank_seed(config.seed + 7919 * start, info.rank))
            if main:
                print(f"[cdn] checkpoint of step {start} was written by {meta.get('world_size', 1)} processes, "
                      f"resuming with {info.world_size}: the noise streams are reseeded")
    D.barrier(info)  # every rank has read the checkpoint before rank 0 may write the next one
    if main:
        _truncate_log(run_dir / "log.jsonl", start)

    ddp = net
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # the input-gradient of the joint loss (autograd.grad w.r.t. y) fires no parameter hook;
        # loss.backward() fires each once: plain DDP is right (module docstring of cdn.distributed)
        ids = None
        if device.type == "cuda":
            ids = [device.index if device.index is not None else torch.cuda.current_device()]
        ddp = DistributedDataParallel(net, device_ids=ids)
        ddp.noise_conditioning = bool(getattr(net, "noise_conditioning", False))
    model = JointModel(ddp)

    images = train_set.images.to(device)
    labels = train_set.labels.to(device)
    n, bs = len(train_set), config.batch_size
    per_epoch = n // bs
    end = config.steps if stop_after is None else min(config.steps, stop_after)
    progress = _want_progress(progress) and main
    timed = config.time_budget_s is not None
    bar = tqdm(total=None if timed else config.steps, initial=start, disable=not progress, desc=config.run_name(),
               leave=False)
    net.train()
    use_amp = resumed_autocast(config, device, None if found is None else found[1].get("autocast"))
    if main and found is not None and use_amp != autocast_bf16(config, device):
        print(f"[cdn] resuming in {'bf16' if use_amp else 'float32'}, the precision step {start} was trained in "
              f"(precision='auto' on this machine alone would pick {'float32' if use_amp else 'bf16'})")
    fast = use_second_order(config.objective, device, config.steps)
    acc_terms: dict[str, torch.Tensor] = {}
    t_last, n_last, perm_epoch, perm = time.perf_counter(), 0, -1, None
    # training seconds: those the checkpoint recorded plus this call's; under torch.distributed rank
    # 0's clock decides (the learning rate and the end of a time-budget run must agree on every rank)
    t_call, elapsed_call = t_last, elapsed

    def clock() -> float:
        now = elapsed_call + time.perf_counter() - t_call
        return D.broadcast_int(round(now * 1e6), info, device) / 1e6 if timed else now

    last_good = start
    step = start
    preempted = stop = False
    with _sigterm_flag() as sigterm:
        for step in range(start, end):
            if timed and elapsed >= config.time_budget_s:  # a resumed run whose budget was already spent
                end = step
                break
            epoch, i = divmod(step, per_epoch)
            if epoch != perm_epoch:
                perm, perm_epoch = epoch_permutation(n, epoch, config.seed).to(device), epoch
            idx = D.shard(perm[i * bs:(i + 1) * bs], info)
            x, c = fast_batch(images, labels, idx, generator, config.augment)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            lr = lr_at(step, config, elapsed) if timed else lr_at(step, config)
            if config.lam_balance_every and step % config.lam_balance_every == 0:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    norms = term_gradient_norms(loss_fn, net, x, c, config.seed, step)
                # rank 0's lam on every rank, to the nanounit (its ranks measure different shards)
                lam = balanced_lam(loss_fn.lam, norms["grad_ce"], norms["grad_dsm"])
                loss_fn = dataclasses.replace(loss_fn, lam=D.broadcast_int(round(lam * 1e9), info, device) / 1e9)

            def check(loss):
                nonlocal stop
                bad, stop = D.any_flag([not bool(torch.isfinite(loss)), sigterm.is_set()], info, device)
                if bad:
                    bar.close()
                    raise FloatingPointError(
                        f"non-finite loss ({loss.item()}) at step {step} of {config.run_name()}; the last good "
                        f"checkpoint (step {last_good}) in {run_dir / 'ckpt'} is kept. Lower lr or check the data.")

            loss, terms = train_step(model.net if config.objective == "mse" else model, loss_fn, optimizer, x, c,
                                     generator, lr=lr, use_amp=use_amp, fast_second_order=fast,
                                     grad_clip=config.grad_clip, check=check, params=net.parameters())
            if ema is not None:
                ema_update(ema, net, ema_decay_at(step, config))
            terms["loss"] = loss.detach()
            for k, v in terms.items():
                acc_terms[k] = acc_terms.get(k, 0) + v.float()
            n_last += 1
            elapsed = clock()
            spent = timed and elapsed >= config.time_budget_s
            last = step + 1 == end or stop or spent
            if (step + 1) % config.log_every == 0 or last:
                now = time.perf_counter()
                means = D.mean_across(acc_terms, info)
                row = {"step": step + 1, "epoch": round((step + 1) / per_epoch, 4), "lr": lr,
                       **{k: float(v) / n_last for k, v in means.items()},
                       "images_per_s": n_last * bs / max(now - t_last, 1e-9), "elapsed_s": round(elapsed, 3)}
                if config.lam_balance_every:
                    row["lam"] = loss_fn.lam
                if main and hasattr(loss_fn, "gradient_norms") and ((step + 1) % config.checkpoint_every == 0 or last):
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                        row.update(term_gradient_norms(loss_fn, net, x, c, config.seed, step))
                    now = time.perf_counter()  # not counted in the images/s of the next row
                if main:
                    with open(run_dir / "log.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss", "acc") if k in row})
                acc_terms, n_last, t_last = {}, 0, now
            bar.update(1)
            if (step + 1) % config.checkpoint_every == 0 or last:
                states = D.gather_generator_states(generator, info, device)
                if main:
                    ema_tensors = None if ema is None else {f"ema/{k}": v for k, v in ema.items()}
                    save_training_checkpoint(run_dir / "ckpt", step + 1, net, optimizer, states,
                                             {"elapsed_s": elapsed, "run": config.run_name(),
                                              "autocast": "bf16" if use_amp else "float32",
                                              **({"lam": loss_fn.lam} if config.lam_balance_every else {})},
                                             extra_tensors=ema_tensors)
                D.barrier(info)
                last_good = step + 1
            if spent:
                end = step + 1
                break
            if stop:
                preempted = True
                end = step + 1
                if main:
                    print(f"[cdn] SIGTERM: saved checkpoint of step {end} in {run_dir / 'ckpt'}; "
                          "run the same command again to resume")
                break
    bar.close()
    finished = end == config.steps or (timed and elapsed >= config.time_budget_s)
    state = {"finished": finished, "step": end, "elapsed_s": round(elapsed, 3), "run": config.run_name(),
             "device": str(device), "torch": torch.__version__, "data": train_set.source,
             "train_images": len(train_set), "epochs": round(end / per_epoch, 3),
             "num_classes": train_set.num_classes, "in_channels": train_set.in_channels,
             "image_size": train_set.image_size, "classes": train_set.classes,
             "world_size": info.world_size, "commit": commit, "machine": machine,
             "autocast": "bf16" if use_amp else "float32",
             "second_order": second_order.DESCRIPTION if fast else "autograd", "allocator": allocator}
    if timed:
        state["time_budget_s"] = config.time_budget_s
    if config.lam_balance_every:
        state["lam_final"] = loss_fn.lam
    if preempted:
        state["preempted"] = True
    if main:
        if finished:
            weights = net.state_dict() if ema is None else ema  # with EMA: the averaged weights are the model
            atomic_save_tensors(weights, run_dir / "model.safetensors", {"format": "cdn-model-1"})
        atomic_write_text(run_dir / "state.json", json.dumps(state, indent=1))
    D.barrier(info)
    return state


class _Flag:
    def __init__(self):
        self.value = False

    def set(self, *_):
        self.value = True

    def is_set(self) -> bool:
        return self.value


class _sigterm_flag:
    """Within the block, SIGTERM sets a flag instead of killing the process (main thread only;
    elsewhere the flag never rises). The previous handler is restored on exit."""

    def __enter__(self) -> _Flag:
        import signal
        import threading

        self.flag, self.prev = _Flag(), None
        if threading.current_thread() is threading.main_thread():
            self.prev = signal.signal(signal.SIGTERM, self.flag.set)
        return self.flag

    def __exit__(self, *exc):
        import signal

        if self.prev is not None:
            signal.signal(signal.SIGTERM, self.prev)
        return False


def _want_progress(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    import sys

    return sys.stderr.isatty()


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows beyond ``step`` (written after the checkpoint a resume starts from)."""
    if not path.exists():
        return
    rows = [json.dumps(r) for r in _parse_log(path.read_text()) if r["step"] <= step]
    atomic_write_text(path, "".join(r + "\n" for r in rows))


def _parse_log(text: str) -> list[dict]:
    """The rows of a log; a line a kill cut short (not valid JSON) is dropped."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "step" in row:
            rows.append(row)
    return rows


def read_log(run_dir: str | Path) -> list[dict]:
    """The rows of ``log.jsonl`` of a run."""
    path = Path(run_dir) / "log.jsonl"
    if not path.exists():
        return []
    return _parse_log(path.read_text())
