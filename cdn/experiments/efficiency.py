"""Accuracy against wall-clock time for the joint model and JEM under equal time budgets (chapter
"Efficiency").

Both are trained by the same loop (``accuracy_vs_time``): a batch from the fast data path
(``cdn.data.fast_batch``, the data order of ``cdn.data.epoch_permutation``), one update of the
trainer, the clock stopped while the test accuracy on a fixed seeded subset is measured every
``eval_every_s`` seconds of training. The trainers differ only in their update: ``JointTrainer`` is
one step of ``cdn.losses.JointLoss`` (one double backward), ``cdn.experiments.jem.JEMTrainer`` K SGLD
steps then JEM's loss. Same network, width, batch, optimiser, learning rate and schedule (linear
warm-up, then constant: a time budget fixes no step count for a cosine decay).

The curves are cached as JSON under the runs root (``runs_root()/efficiency/``), keyed by a hash of
the settings, so a book rebuild reads them instead of training again. A curve committed under
``results/efficiency/`` with the same name (the quick profile's, measured once on the project's 2-core
machine) is read first, so a newcomer's first build does not spend 16 minutes racing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import torch

from ..checkpoint import atomic_write_text
from ..data import ImageDataset, epoch_permutation, fast_batch
from ..joint import JointModel
from ..losses import CrossEntropyLoss, DenoisingMSELoss, JointLoss
from ..profiles import CODE_VERSION, FIRST_JOINT_SETTINGS, JOINT_ARCH, Config, experiment_sizes, get_config, sizes_profile
from ..committed import results_root
from ..runs import resolve_data, runs_root
from ..train import default_device, make_loss, make_net, make_optimizer, set_cpu_threads, train_step, tune_allocator
from .jem import JEMTrainer


class JointTrainer:
    """One update of the joint model of ``config`` (``cdn.losses.JointLoss``) with the optimiser and
    gradient clipping of ``cdn.train``; ``logits`` takes pixels in [0, 1]."""

    def __init__(self, config: Config, num_classes: int, in_channels: int, device=None, seed: int = 0):
        self.config, self.device = config, torch.device(device or "cpu")
        self.net = make_net(config, num_classes, in_channels).to(self.device)
        self.model = JointModel(self.net)
        self.loss_fn = make_loss(config)
        self.optimizer = make_optimizer(self.net, config, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(seed)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.logits(x)

    def step(self, x: torch.Tensor, c: torch.Tensor, lr: float | None = None) -> dict[str, float]:
        """``loss = CE + lam * DSM`` on the batch, one optimiser step (``cdn.train.train_step``, in float32 with
        PyTorch's own second derivatives: the race's clock would count the compilation of the closed forms);
        returns the terms as floats."""
        def check(loss):
            if not torch.isfinite(loss):
                raise FloatingPointError(f"joint loss is {loss.item()}")

        loss, terms = train_step(self.model, self.loss_fn, self.optimizer, x, c, self.generator, lr=lr,
                                 grad_clip=self.config.grad_clip, check=check, params=self.net.parameters())
        return {k: float(v) for k, v in {**terms, "loss": loss.detach()}.items()}


@torch.no_grad()
def test_accuracy(trainer, test: ImageDataset, batch_size: int = 250) -> float:
    """Accuracy of ``argmax trainer.logits(x)`` on the clean images of ``test``."""
    trainer.net.eval()
    correct = 0
    for start in range(0, len(test), batch_size):
        x = test.to_float(slice(start, start + batch_size), trainer.device)
        correct += int((trainer.logits(x).argmax(1).cpu() == test.labels[start:start + batch_size]).sum())
    trainer.net.train()
    return correct / len(test)


def accuracy_vs_time(trainer, train: ImageDataset, test: ImageDataset, budget_s: float, eval_every_s: float,
                     batch_size: int, lr: float, warmup_steps: int, seed: int = 0) -> dict:
    """Train ``trainer`` for ``budget_s`` seconds of training time (data and update; evaluation
    excluded) and return ``{"curve": [{"seconds", "step", "accuracy"}, ...], "steps", "diverged"}``,
    the accuracy measured at 0 s, every ``eval_every_s`` s and at the end. A ``FloatingPointError``
    (JEM's divergence check) ends the curve and is recorded as ``diverged``."""
    if budget_s <= 0 or eval_every_s <= 0:
        raise ValueError(f"budget_s and eval_every_s must be > 0, got {budget_s}, {eval_every_s}")
    if batch_size > len(train):
        raise ValueError(f"batch_size {batch_size} is larger than the training set ({len(train)} images)")
    dev = trainer.device
    images, labels = train.images.to(dev), train.labels.to(dev)
    generator = torch.Generator(device=dev).manual_seed(seed)
    per_epoch = len(train) // batch_size
    curve = [{"seconds": 0.0, "step": 0, "accuracy": test_accuracy(trainer, test)}]
    clock, step, next_eval, perm_epoch, diverged = 0.0, 0, eval_every_s, -1, None
    while clock < budget_s:
        epoch, i = divmod(step, per_epoch)
        t0 = time.perf_counter()
        if epoch != perm_epoch:
            perm, perm_epoch = epoch_permutation(len(train), epoch, seed).to(dev), epoch
        x, c = fast_batch(images, labels, perm[i * batch_size:(i + 1) * batch_size], generator)
        try:
            trainer.step(x, c, lr * min(1.0, (step + 1) / warmup_steps))
        except FloatingPointError as err:
            diverged = {"step": step, "seconds": clock, "error": str(err)}
            break
        clock += time.perf_counter() - t0
        step += 1
        if clock >= next_eval or clock >= budget_s:
            curve.append({"seconds": clock, "step": step, "accuracy": test_accuracy(trainer, test)})
            while next_eval <= clock:
                next_eval += eval_every_s
    return {"curve": curve, "steps": step, "diverged": diverged}


#: the models of the comparison: name -> (objective, architecture, learning rate or None for the
#: profile's). JEM's SGLD step of 1 overshoots on GradResNet, whose log-energy term makes the score
#: large (chapter "Efficiency"): JEM also runs on the literal architecture without that term, and there
#: with its own learning rate 1e-4 as well.
RACE_MODELS: dict[str, tuple[str, str, float | None]] = {
    "joint": ("joint", JOINT_ARCH, None),
    "jem": ("jem", JOINT_ARCH, None),
    "jem-nologenergy": ("jem", "gradresnet-nologenergy", None),
    "jem-nologenergy-lr1e-4": ("jem", "gradresnet-nologenergy", 1e-4),
}


#: the race's joint model trains with the joint settings before chapter 10's rule chose ``cdn.profiles.JOINT_SETTINGS``
#: (lam = 1, log-uniform sigma, cross-entropy on the noisy image): the committed race (results/efficiency/) was measured
#: with them. lam and the sigma law change the balance of the two loss terms, not the cost of a step, which is what the
#: race compares; the default's cross-entropy on the clean image as well adds one forward and backward pass of the
#: classifier to each step
RACE_SETTINGS = FIRST_JOINT_SETTINGS


def race_config(profile: str, seed: int = 0) -> Config:
    """The joint model's configuration that the race of ``profile`` starts from (its "efficiency" sizes,
    ``cdn.profiles.experiment_sizes``, and ``RACE_SETTINGS``)."""
    s = experiment_sizes(profile, "efficiency")
    return get_config(profile, "gradresnet", "cifar10", width=s["width"], batch_size=s["batch_size"],
                      test_size=s["test_size"], lr=s["lr"], warmup_steps=s["warmup_steps"], seed=seed, **RACE_SETTINGS)


def race_file(profile: str, name: str, seed: int = 0, device_type: str = "cpu", config: Config | None = None) -> Path:
    """Where the race caches the curve of ``RACE_MODELS[name]``: ``<runs root>/efficiency/<profile>-<name>-<hash>.json``,
    the hash of the race settings, the configuration (``race_config``, or ``config`` after the data resolved),
    ``CODE_VERSION``, the device type and the model; a committed curve has the same name under
    ``results/efficiency/``."""
    kind, arch, lr = RACE_MODELS[name]
    config = config or race_config(profile, seed)
    key = json.dumps({"settings": experiment_sizes(profile, "efficiency"), "config": config.key(),
                      "code_version": CODE_VERSION, "device": device_type, "model": [kind, arch] + ([lr] if lr is not None else [])}, sort_keys=True)
    return runs_root() / "efficiency" / f"{profile}-{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.json"


def race(profile: str = "quick", data_dir=None, seed: int = 0, device=None, refresh: bool = False,
         models=tuple(RACE_MODELS)) -> dict:
    """Accuracy against training time of the ``models`` of ``RACE_MODELS`` with the settings of
    ``experiment_sizes(profile, "efficiency")``, each cached as JSON under ``runs_root()/efficiency/`` keyed
    by a hash of its settings, or read from ``results/efficiency/`` when committed there (``refresh``
    recomputes). Returns ``{"settings", "data", "train_images",
    "test_images", "device", "threads", "torch", "models": {name: accuracy_vs_time result + "arch", "kind",
    "lr", "threads" and "device" it raced with, "committed"}}`` (``device`` and ``threads`` at the top level
    are this process's; a committed curve records its own)."""
    if sizes_profile(profile, "efficiency") != profile:
        raise ValueError(f"no efficiency sizes for profile {profile!r} (cdn.profiles.EXPERIMENT_SIZES); race in "
                         f"{sizes_profile(profile, 'efficiency')!r}, the profile whose sizes it falls back to")
    unknown = set(models) - set(RACE_MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; expected some of {', '.join(RACE_MODELS)}")
    s = experiment_sizes(profile, "efficiency")
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        set_cpu_threads()
        tune_allocator()
    data = resolve_data(race_config(profile, seed), data_dir)
    config = data.config
    result = {"settings": s, "profile": profile, "seed": seed, "data": data.source, "train_images": len(data.train),
              "test_images": len(data.test), "device": str(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "models": {}}
    for name in models:
        kind, arch, lr = RACE_MODELS[name]
        path = race_file(profile, name, seed, device.type, config)
        cached = next((p for p in (results_root() / "efficiency" / path.name, path) if p.is_file()), None)
        if cached is not None and not refresh:
            result["models"][name] = dict(json.loads(cached.read_text()), committed=cached != path)
            continue
        cfg = dataclasses.replace(config, arch=arch)
        shape = tuple(data.train.images.shape[1:])
        trainer = (JointTrainer(cfg, data.train.num_classes, shape[0], device, seed) if kind == "joint" else
                   JEMTrainer(cfg, data.train.num_classes, shape, device, k=s["k"]))
        out = accuracy_vs_time(trainer, data.train, data.test, s["budget_s"], s["eval_every_s"], s["batch_size"],
                               lr or s["lr"], s["warmup_steps"], seed)
        out.update(arch=arch, kind=kind, lr=lr or s["lr"], threads=torch.get_num_threads(), device=str(device))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(out, indent=1))
        result["models"][name] = dict(out, committed=False)
    return result


def accuracy_at(curve: list[dict], seconds: float) -> float | None:
    """The last accuracy measured at or before ``seconds`` of training on ``curve`` (None if none)."""
    before = [p["accuracy"] for p in curve if p["seconds"] <= seconds]
    return before[-1] if before else None


def race_title(race_result: dict) -> str:
    """The race's images and the devices and threads it ran on, in one line (a figure title); where its curves
    were read from ``results/efficiency/`` rather than raced in this build, it says so."""
    ran_on = sorted({f"{m.get('device', race_result['device'])}, {m.get('threads', race_result['threads'])} thread(s)"
                     for m in race_result["models"].values()})
    committed = any(m.get("committed") for m in race_result["models"].values())
    return (f"{race_result['train_images']} training images, {race_result['test_images']} test images; {'; '.join(ran_on)}"
            + ("\n(the committed curves of results/efficiency/, not raced in this build)" if committed else ""))


def race_rows(race_result: dict, fractions=(0.25, 0.5, 1.0)) -> list[dict]:
    """One row per raced model of ``race``'s result: network, learning rate, updates and updates per second,
    threads, where it diverged, the accuracy at each fraction of the time budget (``accuracy_at``; the last
    fraction 1.0 is the final accuracy) and the best accuracy of its curve."""
    budget, rows = race_result["settings"]["budget_s"], []
    for name, m in race_result["models"].items():
        last = m["curve"][-1]
        row = {"model": name, "network": m["arch"], "lr": m.get("lr", race_result["settings"]["lr"]),
               "updates": m["steps"], "updates per second": m["steps"] / max(last["seconds"], 1e-9),
               "threads": m.get("threads"),
               "diverged": "no" if not m["diverged"] else f"at update {m['diverged']['step']}"}
        for frac in fractions:
            row[f"accuracy at {frac * budget:.0f} s"] = accuracy_at(m["curve"], frac * budget if frac < 1 else float("inf"))
        row["best accuracy"] = max(p["accuracy"] for p in m["curve"])
        rows.append(row)
    return rows


class _FlopCount:
    """Counts the FLOPs of the matrix multiplications and convolutions dispatched inside the block with
    torch's own formulas (``torch.utils.flop_counter.flop_registry``). ``FlopCounterMode`` itself
    cannot be used here: its module tracker raises under ``torch.autograd.grad``."""

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils.flop_counter import flop_registry

        counter = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                formula = flop_registry.get(func._overloadpacket)
                if formula is not None:
                    counter.total += formula(*args, **(kwargs or {}), out_val=out)
                return out

        self.total, self.mode = 0, Mode()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


def flops_per_image(objective: str = "joint", arch: str = "gradresnet", width: int = 16, size: int = 32,
                    num_classes: int = 10, k: int = 20, ce_on: str = "noisy") -> float:
    """Floating-point operations of one training step per image (matrix multiplications and
    convolutions, forward and every backward, the double backward included), counted on one CPU
    image with torch's FLOP formulas: ``ce`` (forward + backward), ``joint`` (``JointLoss`` with its
    cross-entropy on the images ``ce_on`` names), ``mse`` (``DenoisingMSELoss`` of a denoiser) or ``jem`` (K SGLD
    steps + JEM's loss). One multiply-add counts 2."""

    if objective not in ("ce", "joint", "mse", "jem"):
        raise ValueError(f"objective must be 'ce', 'joint', 'mse' or 'jem', got {objective!r}")
    config = get_config("smoke", "gradresnet", arch=arch, width=width)
    x, c = torch.rand(1, 3, size, size), torch.zeros(1, dtype=torch.long)
    if objective == "jem":
        trainer = JEMTrainer(config, num_classes, (3, size, size), k=k, buffer_size=1)
        with _FlopCount() as counter:
            trainer.step(x, c)
        return float(counter.total)
    net = make_net(config, num_classes, 3)
    model = net if objective == "mse" else JointModel(net)
    loss_fn = {"joint": JointLoss(ce_on=ce_on), "ce": CrossEntropyLoss(), "mse": DenoisingMSELoss()}[objective]
    with _FlopCount() as counter:
        loss, _ = loss_fn(model, x, c)
        loss.backward()
    return float(counter.total)


def step_flops(objective: str, arch: str, width: int, size: int, batch: int, ce_on: str = "noisy") -> float:
    """FLOPs of one training step of ``batch`` images: ``batch * flops_per_image`` (every convolution and
    matrix product is linear in the batch)."""
    return batch * flops_per_image(objective, arch, width, size, ce_on=ce_on)




