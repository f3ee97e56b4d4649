"""The data-mollification baseline (chapter "Corruptions and calibration").

Heinonen, Tran, Kampffmeyer and Filippone, *Robust Classification by Coupling Data Mollification
with Label Smoothing* (AISTATS 2025, arXiv:2406.01494), train a classifier on degraded images whose
label smoothing grows with the degradation. What we follow, from the paper and its code
(github.com/markusheinonen/supervised-mollification, ``src/model.py``), with its default setting
(``--batch xnb``, ``alpha = 1``, ``beta = 2``, ``npow = bpow = 1``, label smoothing ``ls``):

* each image of a batch gets one role, uniformly: *clean*, *noise* or *blur* (a third each);
* a level ``t ~ Beta(alpha, beta)`` per image, ``t = 0`` for the clean role;
* noise on the variance-preserving cosine schedule: ``z_t = a_t z + s_t eps``,
  ``a_t = cos(pi t / 2)``, ``s_t = sin(pi t / 2)``, ``SNR(t) = a_t^2 / s_t^2``;
* blur by heat dissipation in the DCT domain (Rissanen et al., 2023): each orthonormal DCT-II
  coefficient ``(k, l)`` of an ``n x n`` image is multiplied by ``exp(-lambda_kl tau_t)`` with
  ``lambda_kl = (pi k / n)^2 + (pi l / n)^2``, ``tau_t = s_b(t)^2 / 2`` and a blur scale growing
  log-linearly from 0.3 pixel to ``n`` pixels, ``s_b(t) = 0.3^(1 - t) n^t`` (so ``t = 0`` is
  already a slight blur, as in the authors' code);
* targets smoothed towards uniform, ``y = (1 - gamma) onehot(c) + gamma / K``, with
  ``gamma = (1 / (1 + SNR(t)))^p = s_t^(2p)`` for noise and ``gamma = t^q`` for blur;
* the loss is the cross-entropy against these soft targets.

Our choices: the paper noises standardised images; our pixels live in [0, 1], so we standardise
with a nominal mean 0.5 and standard deviation 0.25 per channel (close to CIFAR-10's statistics),
``z = (x - 0.5) / 0.25``, noise ``z``, and map back: ``x_t = 0.5 + a_t (x - 0.5) + 0.25 s_t eps``
(pure noise ``N(0.5, 0.25^2)`` at ``t = 1``). ``t`` is drawn from the training loop's generator as
an order statistic (the ``alpha``-th smallest of ``alpha + beta - 1`` uniforms is exactly
``Beta(alpha, beta)``), so runs are reproducible and resumable; this needs integer ``alpha`` and
``beta`` (the paper uses 1 and 2, 4 or 9). The DCT is a matrix product, so the loss runs on any
device. The network, loop, augmentation and budget are those of the ResNet-18 baselines (model
``resnet18-mollify`` in ``cdn.profiles``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

ROLES = ("clean", "noise", "blur")
#: the nominal per-channel mean and standard deviation that map [0, 1] pixels to standardised ones
PIXEL_CENTER, PIXEL_SCALE = 0.5, 0.25
#: smallest blur scale (pixels), as in the authors' code (after Rissanen et al., 2023)
BLUR_SCALE_MIN = 0.3


def _check_t(t: torch.Tensor) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float32)
    if not torch.isfinite(t).all() or (t < 0).any() or (t > 1).any():
        raise ValueError(f"the mollification level t must lie in [0, 1], got min {t.min().item()}, max {t.max().item()}")
    return t


def beta_sample(n: int, alpha: int = 1, beta: int = 2, generator: torch.Generator | None = None,
                device=None) -> torch.Tensor:
    """``n`` draws of ``Beta(alpha, beta)`` for integer ``alpha, beta >= 1``: the ``alpha``-th smallest
    of ``alpha + beta - 1`` uniforms (an order statistic, exact), drawn from ``generator``."""
    if int(alpha) != alpha or int(beta) != beta or alpha < 1 or beta < 1:
        raise ValueError(f"alpha and beta must be integers >= 1 (order-statistic sampler), got {alpha}, {beta}")
    device = device or (generator.device if generator is not None else "cpu")
    u = torch.rand(n, int(alpha + beta - 1), generator=generator, device=device)
    return u.sort(dim=1).values[:, int(alpha) - 1]


def vp_coefficients(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine variance-preserving schedule: ``(a_t, s_t) = (cos(pi t / 2), sin(pi t / 2))``,
    so ``a_t^2 + s_t^2 = 1`` and ``SNR(t) = a_t^2 / s_t^2``."""
    t = _check_t(t)
    return torch.cos(0.5 * math.pi * t), torch.sin(0.5 * math.pi * t)


def noise_label_weight(t: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Label smoothing of a noised image: ``gamma = (1 / (1 + SNR(t)))^p = s_t^(2p)``; 0 at
    ``t = 0``, 1 at ``t = 1``."""
    return vp_coefficients(t)[1].pow(2 * power)


def blur_label_weight(t: torch.Tensor, power: float = 1.0) -> torch.Tensor:
    """Label smoothing of a blurred image: ``gamma = t^q``; 0 at ``t = 0``, 1 at ``t = 1``."""
    return _check_t(t).pow(power)


def smooth_labels(c: torch.Tensor, num_classes: int, gamma: torch.Tensor) -> torch.Tensor:
    """Soft targets ``(1 - gamma) onehot(c) + gamma / K``, shape (B, K)."""
    onehot = F.one_hot(c, num_classes).to(gamma.dtype)
    return (1 - gamma)[:, None] * onehot + gamma[:, None] / num_classes


@lru_cache(maxsize=16)
def _dct_matrix_cached(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.to(device=device, dtype=dtype)


def dct_matrix(n: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``M`` (n x n): ``M x`` is ``scipy.fft.dct(x, norm='ortho')``
    and ``M^T`` its inverse."""
    return _dct_matrix_cached(int(n), str(torch.device(device or "cpu")), dtype)


def blur_scale(t: torch.Tensor, size: int) -> torch.Tensor:
    """Blur scale in pixels, log-linear from 0.3 at ``t = 0`` to ``size`` at ``t = 1``."""
    t = _check_t(t)
    return torch.exp((1 - t) * math.log(BLUR_SCALE_MIN) + t * math.log(size))


def heat_blur(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Heat dissipation of square images ``x`` (B, C, n, n) for time ``tau_t = blur_scale(t)^2 / 2``:
    ``idct(exp(-lambda tau_t) * dct(x))`` with ``lambda_kl = (pi k / n)^2 + (pi l / n)^2``. Keeps the
    mean of each channel (``lambda_00 = 0``) and constant images."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"heat_blur needs square images (B, C, n, n), got shape {tuple(x.shape)}")
    n = x.shape[-1]
    m = dct_matrix(n, x.device, torch.float32)
    freqs = math.pi * torch.arange(n, device=x.device, dtype=torch.float32) / n
    lam = freqs[:, None] ** 2 + freqs[None, :] ** 2
    tau = blur_scale(t.to(x.device, torch.float32), n) ** 2 / 2
    with torch.autocast(x.device.type, enabled=False):  # a float32 transform under bf16 training
        coeff = m @ x.float() @ m.T
        return (m.T @ (torch.exp(-lam * tau[:, None, None, None]) * coeff) @ m).to(x.dtype)


def vp_noise(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Variance-preserving noise on [0, 1] pixels standardised with mean 0.5 and std 0.25:
    ``x_t = 0.5 + a_t (x - 0.5) + 0.25 s_t eps``."""
    a, s = vp_coefficients(t.to(x.device))
    a, s = a.view(-1, 1, 1, 1).to(x.dtype), s.view(-1, 1, 1, 1).to(x.dtype)
    return PIXEL_CENTER + a * (x - PIXEL_CENTER) + PIXEL_SCALE * s * eps


def smoothed_cross_entropy(logits: torch.Tensor, c: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against ``smooth_labels(c, K, gamma)``, averaged over the batch:
    ``mean_i [(1 - gamma_i) (-log p(c_i | x_i)) + gamma_i mean_k (-log p(k | x_i))]``; plain
    cross-entropy where ``gamma = 0``."""
    logp = torch.log_softmax(logits.float(), dim=1)
    nll = -logp.gather(1, c[:, None]).squeeze(1)
    return ((1 - gamma) * nll + gamma * (-logp.mean(1))).mean()


def mollify(x: torch.Tensor, t: torch.Tensor, role: torch.Tensor, eps: torch.Tensor,
            noise_power: float = 1.0, blur_power: float = 1.0):
    """Mollified images and their label-smoothing weights. ``role`` (B,) holds indices into
    ``ROLES``: clean images keep ``gamma = 0``; noised images (``vp_noise``) get
    ``noise_label_weight``; blurred images (``heat_blur``) ``blur_label_weight``.
    Returns ``(x_m, gamma)``."""
    t = _check_t(t).to(x.device, torch.float32)
    if role.shape != t.shape or t.shape != (x.shape[0],):
        raise ValueError(f"t and role must have shape ({x.shape[0]},), got {tuple(t.shape)} and {tuple(role.shape)}")
    noise, blur = (role == ROLES.index("noise")), (role == ROLES.index("blur"))
    x_m = torch.where(noise.view(-1, 1, 1, 1), vp_noise(x, t, eps), x)
    if blur.any():
        x_m = torch.where(blur.view(-1, 1, 1, 1), heat_blur(x, t), x_m)
    gamma = torch.zeros_like(t)
    gamma = torch.where(noise, noise_label_weight(t, noise_power), gamma)
    gamma = torch.where(blur, blur_label_weight(t, blur_power), gamma)
    return x_m, gamma


def sample_roles_and_levels(batch: int, alpha: int = 1, beta: int = 2, generator: torch.Generator | None = None,
                            device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A role per image, uniform over ``ROLES``, and a level ``t ~ Beta(alpha, beta)`` (0 for the
    clean role). Returns ``(role, t)``, both (B,)."""
    device = device or (generator.device if generator is not None else "cpu")
    role = torch.randint(0, len(ROLES), (batch,), generator=generator, device=device)
    t = beta_sample(batch, alpha, beta, generator, device)
    return role, torch.where(role == ROLES.index("clean"), torch.zeros_like(t), t)


@dataclass(frozen=True)
class MollifyLoss:
    """Cross-entropy against mollified targets on mollified images (the paper's default setting:
    roles clean/noise/blur a third each, ``t ~ Beta(1, 2)``, powers 1). Returns ``(loss, terms)``
    like the losses of ``cdn.losses``; ``gamma`` is the mean label-smoothing weight of the batch."""

    alpha: int = 1
    beta: int = 2
    noise_power: float = 1.0
    blur_power: float = 1.0

    def __post_init__(self):
        beta_sample(1, self.alpha, self.beta)  # validates alpha, beta
        if self.noise_power <= 0 or self.blur_power <= 0:
            raise ValueError(f"noise_power and blur_power must be > 0, got {self.noise_power}, {self.blur_power}")

    def __call__(self, model, x: torch.Tensor, c: torch.Tensor, generator=None):
        role, t = sample_roles_and_levels(x.shape[0], self.alpha, self.beta, generator, x.device)
        eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_m, gamma = mollify(x, t, role, eps, self.noise_power, self.blur_power)
        logits = model.logits(x_m, torch.zeros(x.shape[0], device=x.device)).float()
        ce = smoothed_cross_entropy(logits, c, gamma)
        acc = (logits.argmax(1) == c).float().mean()
        return ce, {"ce": ce.detach(), "acc": acc.detach(), "gamma": gamma.mean().detach()}
