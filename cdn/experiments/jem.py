"""A small, faithful JEM trainer (Grathwohl et al. 2020, "Your classifier is secretly an energy based
model and you should treat it like one"; reference code wgrathwohl/JEM ``train_wrn_ebm.py``), on the
same GradResNet as the joint model, for the measured efficiency comparison of chapter "Efficiency".

JEM reads the logits ``f(x)`` of a classifier as an energy-based model: ``p(x, c) ∝ exp f(x)_c`` and

    E(x) = -logsumexp_c f(x)_c,        p(x) ∝ exp(-E(x)).

Its loss is ``CE(f(x), c) + E(x) - E(x_q)`` per batch (mean over images), the second part the
gradient estimator of ``-log p(x)`` with ``x_q`` an approximate sample of ``p``. ``x_q`` comes from K
steps of SGLD started from a persistent replay buffer:

    x_{k+1} = x_k - alpha * grad_x E(x_k) + s * eps,   eps ~ N(0, I),

with JEM's values alpha = 1, s = 0.01, K = 20; the buffer holds 10 000 images initialised uniformly on
``[-1, 1]``, and each chain starts from a uniform-noise image with probability 5% (re-initialisation),
else from a random buffer entry; its end is written back to that entry.

Scaling: as in JEM, the network sees images on ``[-1, 1]`` (``2 x - 1`` for our pixels ``x`` in
``[0, 1]``) plus Gaussian data noise of standard deviation 0.03 during training (JEM's ``--sigma``);
the buffer and the SGLD step live on that scale. ``JEMTrainer.logits`` takes our [0, 1] pixels.
Departures from the reference, both ours: one batch serves both the cross-entropy and the ``p(x)``
term (JEM draws two independent batches of the same fully labelled set), and the optimiser is the
project's AdamW with gradient clipping (``cdn.train``), so that the joint model and JEM differ only
in their objective.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import (CheckpointError, atomic_save_tensors, latest_training_checkpoint, load_tensors,
                          restore_training_checkpoint, save_training_checkpoint)
from ..joint import JointModel, check_image
from ..nets import build_net
from ..profiles import Config
from ..train import apply_update, make_optimizer

#: JEM's defaults (train_wrn_ebm.py): SGLD steps, step size, noise, buffer size, re-initialisation, data noise
JEM_DEFAULTS = dict(k=20, step_size=1.0, noise=0.01, buffer_size=10_000, reinit_freq=0.05, data_noise=0.03)


def energy(model: JointModel, x: torch.Tensor) -> torch.Tensor:
    """JEM's energy ``E(x) = -logsumexp_c f(x)_c``, shape (B,)."""
    return -torch.logsumexp(model.logits(x).float(), dim=-1)


def sgld(model: JointModel, x: torch.Tensor, steps: int = 20, step_size: float = 1.0, noise: float = 0.01,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """K steps of JEM's SGLD: ``x <- x - step_size * grad_x E(x) + noise * eps`` with
    ``E = -logsumexp f`` (``grad_x E = -model.score(x)``). Returns the detached end of the chains."""
    check_image(x, "x")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not step_size >= 0 or not noise >= 0:
        raise ValueError(f"step_size and noise must be >= 0, got {step_size!r}, {noise!r}")
    x = x.detach()
    for _ in range(steps):
        x = x + step_size * model.score(x)
        if noise > 0:
            x = x + noise * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x


@dataclass
class ReplayBuffer:
    """JEM's persistent replay buffer: ``samples`` (N, C, H, W) on ``[-1, 1]``."""

    samples: torch.Tensor

    @classmethod
    def uniform(cls, size: int, shape: tuple[int, ...], generator: torch.Generator | None = None,
                device=None) -> "ReplayBuffer":
        """A buffer of ``size`` images uniform on ``[-1, 1]`` of shape ``shape`` = (C, H, W)."""
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"buffer size must be an integer >= 1, got {size!r}")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"image shape must be (C, H, W) with positive sizes, got {tuple(shape)}")
        dev = device or (generator.device if generator is not None else "cpu")
        return cls(torch.rand((size, *shape), generator=generator, device=dev) * 2 - 1)

    def __len__(self) -> int:
        return self.samples.shape[0]

    def draw(self, batch: int, reinit_freq: float = 0.05, generator: torch.Generator | None = None):
        """Starting points of ``batch`` chains: a random buffer entry each, replaced by uniform noise on
        ``[-1, 1]`` with probability ``reinit_freq``. Returns ``(x0, index, reinitialised)``."""
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an integer >= 1, got {batch!r}")
        if not 0 <= reinit_freq <= 1:
            raise ValueError(f"reinit_freq must be in [0, 1], got {reinit_freq!r}")
        dev = self.samples.device
        index = torch.randint(0, len(self), (batch,), generator=generator, device=dev)
        fresh = torch.rand(self.samples[index].shape, generator=generator, device=dev) * 2 - 1
        reinit = torch.rand(batch, generator=generator, device=dev) < reinit_freq
        x0 = torch.where(reinit[:, None, None, None], fresh, self.samples[index])
        return x0, index, reinit

    def store(self, index: torch.Tensor, x: torch.Tensor) -> None:
        """Write the chains' ends ``x`` back to the entries ``index`` they started from."""
        if x.shape[1:] != self.samples.shape[1:] or index.shape != (x.shape[0],):
            raise ValueError(f"expected x of shape (B, {', '.join(map(str, self.samples.shape[1:]))}) and index (B,), "
                             f"got {tuple(x.shape)} and {tuple(index.shape)}")
        self.samples[index] = x.detach().to(self.samples)


class JEMTrainer:
    """JEM on the network of ``config`` (``build_net(config.arch, ...)``), trained with the project's
    optimiser (``cdn.train``: AdamW, gradient clipping at ``config.grad_clip``)."""

    def __init__(self, config: Config, num_classes: int, image_shape: tuple[int, int, int], device=None,
                 k: int = JEM_DEFAULTS["k"], step_size: float = JEM_DEFAULTS["step_size"],
                 noise: float = JEM_DEFAULTS["noise"], buffer_size: int = JEM_DEFAULTS["buffer_size"],
                 reinit_freq: float = JEM_DEFAULTS["reinit_freq"], data_noise: float = JEM_DEFAULTS["data_noise"]):
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k (SGLD steps per update) must be an integer >= 1, got {k!r}")
        if data_noise < 0:
            raise ValueError(f"data_noise must be >= 0, got {data_noise!r}")
        self.config, self.device = config, torch.device(device or "cpu")
        self.k, self.step_size, self.noise, self.reinit_freq, self.data_noise = k, step_size, noise, reinit_freq, data_noise
        torch.manual_seed(config.seed)
        self.net = build_net(config.arch, num_classes, image_shape[0], config.width,
                             config.noise_conditioning).to(self.device)
        self.model = JointModel(self.net)
        self.optimizer = make_optimizer(self.net, config, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(config.seed)
        self.buffer = ReplayBuffer.uniform(buffer_size, tuple(image_shape), self.generator, self.device)
        self.steps_done = 0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of images ``x`` with pixels in [0, 1] (mapped to JEM's [-1, 1])."""
        return self.model.logits(2 * x - 1)

    def step(self, x: torch.Tensor, c: torch.Tensor, lr: float | None = None) -> dict[str, float]:
        """One JEM update on the batch ``(x, c)`` (pixels in [0, 1]): K SGLD steps from the buffer, then
        ``CE(f(x~), c) + mean E(x~) - mean E(x_q)`` with ``x~ = 2x - 1 + data_noise * eps``. Returns the
        terms (``ce``, ``energy_data``, ``energy_sample``, ``loss``, ``acc``) as floats."""
        check_image(x, "x")
        if x.ndim != 4 or x.shape[1:] != self.buffer.samples.shape[1:]:
            raise ValueError(f"x must have shape (B, {', '.join(map(str, self.buffer.samples.shape[1:]))}), "
                             f"got {tuple(x.shape)}")
        if not isinstance(c, torch.Tensor) or c.shape != (x.shape[0],) or c.dtype != torch.int64:
            raise ValueError(f"c must be an int64 tensor of shape ({x.shape[0]},), got "
                             f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")
        if lr is not None:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        x0, index, _ = self.buffer.draw(x.shape[0], self.reinit_freq, self.generator)
        self.net.eval()  # as JEM samples (no effect on GroupNorm)
        xq = sgld(self.model, x0, self.k, self.step_size, self.noise, self.generator)
        self.net.train()
        self.buffer.store(index, xq)
        xd = 2 * x - 1
        if self.data_noise > 0:
            xd = xd + self.data_noise * torch.randn(x.shape, generator=self.generator, device=x.device, dtype=x.dtype)
        logits = self.model.logits(xd).float()
        e_data = -torch.logsumexp(logits, dim=-1).mean()
        e_sample = energy(self.model, xq).mean()
        ce = F.cross_entropy(logits, c)
        loss = ce + e_data - e_sample
        if not torch.isfinite(loss) or loss.abs().item() > 1e8:  # JEM's divergence check
            raise FloatingPointError(f"JEM diverged at step {self.steps_done}: loss {loss.item():.3g} "
                                     f"(E(data) {e_data.item():.3g}, E(sample) {e_sample.item():.3g}); lower lr")
        apply_update(loss, self.optimizer, self.config.grad_clip, self.net.parameters())
        self.steps_done += 1
        acc = (logits.argmax(1) == c).float().mean()
        return {"ce": ce.item(), "energy_data": e_data.item(), "energy_sample": e_sample.item(),
                "loss": loss.item(), "acc": acc.item()}

    def save(self, ckpt_dir: str | Path) -> Path:
        """Checkpoint through ``cdn.checkpoint`` (safetensors + JSON sidecar, atomic, sha256-verified):
        network, optimiser and generator as a training checkpoint of step ``steps_done``, and the
        replay buffer beside it in ``buffer.safetensors``, whose hash the sidecar records."""
        ckpt_dir = Path(ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        digest = atomic_save_tensors({"buffer": self.buffer.samples}, ckpt_dir / "buffer.safetensors",
                                     {"format": "cdn-jem-buffer-1", "step": str(self.steps_done)})
        hyper = {k: getattr(self, k) for k in ("k", "step_size", "noise", "reinit_freq", "data_noise")}
        return save_training_checkpoint(ckpt_dir, self.steps_done, self.net, self.optimizer, self.generator,
                                        {"buffer_sha256": digest, "jem": hyper, "config": self.config.to_dict()})

    def load(self, ckpt_dir: str | Path) -> int:
        """Restore the newest good checkpoint written by ``save``; return its step. Raises
        ``CheckpointError`` when there is none or its buffer does not match."""
        ckpt_dir = Path(ckpt_dir)
        found = latest_training_checkpoint(ckpt_dir)
        if found is None:
            raise CheckpointError(f"no JEM checkpoint in {str(ckpt_dir)!r}")
        tensors, meta = found
        buffer = load_tensors(ckpt_dir / "buffer.safetensors", meta.get("buffer_sha256"))["buffer"]
        if buffer.shape != self.buffer.samples.shape:
            raise CheckpointError(f"replay buffer of shape {tuple(buffer.shape)} does not fit this trainer's "
                                  f"{tuple(self.buffer.samples.shape)}")
        self.steps_done = restore_training_checkpoint(tensors, meta, self.net, self.optimizer, self.generator)
        self.buffer.samples.copy_(buffer)
        return self.steps_done
