"""Losses and noise-level sampling (chapter "Training the joint model").

Each loss is a small callable in the style of NVlabs/edm ``training/loss.py``: sample sigma, add
noise, evaluate, weight. The joint loss is

    L = E[-log softmax(f(y))_c] + lambda * E[w(sigma) ||D(y) - x||^2 / d],   y = x + sigma * eps,

with ``w(sigma) = 1 / sigma^2`` by default, so that ``w ||D(y) - x||^2 = ||sigma * score + eps||^2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .joint import JointModel
from .nets.second_order import second_order_layers

SIGMA_DISTRIBUTIONS = ("log_uniform", "uniform", "log_normal", "ddpm")
#: DDPM's linear schedule (Ho et al. 2020), which EGC diffuses with: beta_t from 1e-4 to 0.02 over 1,000 steps
DDPM_STEPS, DDPM_BETA = 1000, (1e-4, 0.02)


def ddpm_sigmas() -> torch.Tensor:
    """The noise levels of DDPM's 1,000 steps on the variance-exploding scale of this book:
    ``sigma_t = sqrt((1 - abar_t) / abar_t)`` with ``abar_t = prod_{s <= t} (1 - beta_s)``, so that
    ``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps = sqrt(abar_t) (x + sigma_t eps)`` (float64, shape (1000,),
    from 0.010 to about 157)."""
    beta = torch.linspace(*DDPM_BETA, DDPM_STEPS, dtype=torch.float64)
    abar = torch.cumprod(1 - beta, 0)
    return ((1 - abar) / abar).sqrt()


#: EDM's noise distribution (Karras et al., 2022: ln sigma ~ N(-1.2, 1.2^2) for pixels in [-1, 1]) on the
#: [0, 1] pixel scale, where every sigma is halved: ln sigma ~ N(-1.2 - ln 2, 1.2^2), median 0.15
EDM_LOG_MEAN, EDM_LOG_STD = -1.2 - math.log(2.0), 1.2
WEIGHTINGS = ("inv_sigma2", "none")
CE_ON = ("noisy", "clean", "both")


@dataclass(frozen=True)
class SigmaSampler:
    """Noise levels per image: log-uniform (or uniform) on ``[sigma_min, sigma_max]``, or ``log_normal``,
    ``ln sigma ~ N(EDM_LOG_MEAN, EDM_LOG_STD^2)`` clipped to ``[sigma_min, sigma_max]`` (EDM's, which puts
    9% of the images below sigma = 0.03 where the log-uniform on [1e-3, 1] puts half), or ``ddpm``, DDPM's
    1,000 steps drawn uniformly, on this book's scale (``ddpm_sigmas``, clipped likewise); a fraction
    ``clean_fraction`` of images gets ``sigma = 0`` (they enter the cross-entropy term only)."""

    sigma_min: float = 1e-3
    sigma_max: float = 1.0
    distribution: str = "log_uniform"
    clean_fraction: float = 0.0

    def __post_init__(self):
        if not 0 < self.sigma_min <= self.sigma_max:
            raise ValueError(f"need 0 < sigma_min <= sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.distribution not in SIGMA_DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {SIGMA_DISTRIBUTIONS}, got {self.distribution!r}")
        if not 0 <= self.clean_fraction < 1:
            raise ValueError(f"clean_fraction must be in [0, 1), got {self.clean_fraction}")

    def __call__(self, batch: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        """Draw ``batch`` noise levels, shape (B,)."""
        device = device or (generator.device if generator is not None else "cpu")
        u = torch.rand(batch, generator=generator, device=device)
        if self.distribution == "log_uniform":
            lo, hi = torch.log(torch.tensor(self.sigma_min)), torch.log(torch.tensor(self.sigma_max))
            sigma = torch.exp(lo + u * (hi - lo))
        elif self.distribution == "ddpm":
            t = (u * DDPM_STEPS).long().clamp_max(DDPM_STEPS - 1)  # uniform on the 1,000 steps
            sigma = ddpm_sigmas().to(device)[t].float().clamp(self.sigma_min, self.sigma_max)
        elif self.distribution == "log_normal":
            z = torch.randn(batch, generator=generator, device=device)
            sigma = torch.exp(EDM_LOG_MEAN + EDM_LOG_STD * z).clamp(self.sigma_min, self.sigma_max)
        else:
            sigma = self.sigma_min + u * (self.sigma_max - self.sigma_min)
        if self.clean_fraction > 0:
            clean = torch.rand(batch, generator=generator, device=device) < self.clean_fraction
            sigma = torch.where(clean, torch.zeros_like(sigma), sigma)
        return sigma


def add_noise(x: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator | None = None):
    """``y = x + sigma * eps`` with ``eps ~ N(0, I)``; returns ``(y, eps)``."""
    eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + sigma.view(-1, *([1] * (x.ndim - 1))) * eps, eps


def dsm_per_image(score: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor, weighting: str = "inv_sigma2"):
    """Denoising score matching per image, averaged over pixels:
    ``w(sigma) ||D(y) - x||^2 / d`` with ``D(y) - x = sigma^2 score + sigma eps``, i.e.
    ``||sigma score + eps||^2 / d`` for ``w = 1/sigma^2`` and ``sigma^2 ||sigma score + eps||^2 / d`` for
    ``w = 1``."""
    s = sigma.view(-1, *([1] * (score.ndim - 1)))
    per = (s * score.float() + eps.float()).pow(2).flatten(1).mean(1)
    if weighting == "inv_sigma2":
        return per
    if weighting == "none":
        return per * sigma.float() ** 2
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


@dataclass(frozen=True)
class JointLoss:
    """``ce_weight`` times the cross-entropy plus ``lam`` times denoising score matching, from one forward
    and one (differentiable) backward pass. ``dsm_conditional`` uses ``D(y, c)`` instead of ``D(y)``;
    ``ce_on`` chooses noisy images, clean images (one extra forward) or both. ``ce_weight = 0`` with
    ``dsm_conditional`` trains a class-conditional denoiser on score matching alone (the model a diffusion
    classifier reads out, chapter "What the referees asked")."""

    sampler: SigmaSampler = SigmaSampler()
    lam: float = 1.0
    weighting: str = "inv_sigma2"
    dsm_conditional: bool = False
    ce_on: str = "noisy"
    ce_weight: float = 1.0

    def __post_init__(self):
        if self.ce_on not in CE_ON:
            raise ValueError(f"ce_on must be one of {CE_ON}, got {self.ce_on!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")

    def __call__(self, model: JointModel, x: torch.Tensor, c: torch.Tensor, generator=None):
        """Return ``(loss, terms)`` where ``terms`` holds detached ``ce``, ``dsm`` and ``acc``."""
        ce, dsm, acc = self.parts(model, x, c, generator)
        loss = self.ce_weight * ce + self.lam * dsm
        return loss, {"ce": ce.detach(), "dsm": dsm.detach(), "acc": acc.detach()}

    def gradient_norms(self, model: JointModel, x: torch.Tensor, c: torch.Tensor, generator=None) -> dict:
        """The norms of each term's gradient with respect to the parameters on one batch,
        ``{"grad_ce": ||grad_theta CE||, "grad_dsm": ||grad_theta lam DSM||}``: which task drives the update
        (the training log records them at each checkpoint step). Leaves every ``.grad`` untouched."""
        ce, dsm, _ = self.parts(model, x, c, generator)
        params = [p for p in model.parameters() if p.requires_grad]
        out = {}
        for name, term in (("grad_ce", ce), ("grad_dsm", self.lam * dsm)):
            grads = torch.autograd.grad(term, params, retain_graph=name == "grad_ce", allow_unused=True)
            out[name] = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads if g is not None)))
        return out

    def parts(self, model: JointModel, x: torch.Tensor, c: torch.Tensor, generator=None):
        """``(ce, dsm, acc)`` with their graphs: the two terms of the loss before weighting."""
        sigma = self.sampler(x.shape[0], generator, x.device)
        y, eps = add_noise(x, sigma, generator)
        logits, score = model.logits_and_score(y, sigma, c if self.dsm_conditional else None, create_graph=True)
        noisy = sigma > 0
        dsm = dsm_per_image(score, eps, sigma, self.weighting)
        dsm = (dsm * noisy).sum() / noisy.sum().clamp_min(1)
        if self.ce_on == "clean":
            ce = F.cross_entropy(self._clean_logits(model, x, sigma).float(), c)
        else:
            ce = F.cross_entropy(logits.float(), c)
            if self.ce_on == "both":
                ce = 0.5 * (ce + F.cross_entropy(self._clean_logits(model, x, sigma).float(), c))
        return ce, dsm, (logits.argmax(1) == c).float().mean()


    @staticmethod
    def _clean_logits(model: JointModel, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The logits of the clean images, differentiated once only: through PyTorch's own layers even inside
        ``second_order_layers`` (whose closed forms pay for a double backward this pass does not need)."""
        with second_order_layers(False):
            return model.logits(x, torch.zeros_like(sigma))


@dataclass(frozen=True)
class CrossEntropyLoss:
    """Cross-entropy of a classifier; with ``sampler`` set, on ``y = x + sigma * eps`` with sigma from
    the sampler (Gaussian-noise augmentation, the baseline of randomized smoothing); with ``also_clean``,
    ``(CE(y) + CE(x)) / 2``, the classifier term of ``JointLoss(ce_on="both")`` without score matching."""

    sampler: SigmaSampler | None = None
    also_clean: bool = False

    def __post_init__(self):
        if self.also_clean and self.sampler is None:
            raise ValueError("also_clean averages the cross-entropy of noisy and clean images: it needs a sampler")

    def __call__(self, model: JointModel, x: torch.Tensor, c: torch.Tensor, generator=None):
        clean = x
        if self.sampler is not None:
            sigma = self.sampler(x.shape[0], generator, x.device)
            x, _ = add_noise(x, sigma, generator)
        else:
            sigma = torch.zeros(x.shape[0], device=x.device)
        logits = model.logits(x, sigma).float()
        ce = F.cross_entropy(logits, c)
        if self.also_clean:
            ce = 0.5 * (ce + F.cross_entropy(model.logits(clean, torch.zeros_like(sigma)).float(), c))
        acc = (logits.argmax(1) == c).float().mean()
        return ce, {"ce": ce.detach(), "acc": acc.detach()}


@dataclass(frozen=True)
class DenoisingMSELoss:
    """The denoise-only baseline: ``w(sigma) ||D(y) - x||^2 / d`` with the same sigma distribution
    and weighting as the joint model's DSM term, so the two PSNR curves are comparable."""

    sampler: SigmaSampler = SigmaSampler()
    weighting: str = "inv_sigma2"

    def __call__(self, denoiser: torch.nn.Module, x: torch.Tensor, c=None, generator=None):
        sigma = self.sampler(x.shape[0], generator, x.device)
        keep = sigma > 0
        sigma = torch.where(keep, sigma, torch.full_like(sigma, self.sampler.sigma_min))
        y, eps = add_noise(x, sigma, generator)
        err = (denoiser(y).float() - x.float()).pow(2).flatten(1).mean(1)
        w = 1 / sigma.float() ** 2 if self.weighting == "inv_sigma2" else torch.ones_like(sigma)
        loss = (w * err).mean()
        return loss, {"dsm": loss.detach()}
