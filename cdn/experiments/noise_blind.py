"""What denoising score matching learns when the network is not told the noise level (chapter "Tweedie").

A noise-blind network has one field ``s(y)`` for every ``sigma`` of the training distribution. Its loss,
``E_sigma E_{x, eps} ||sigma s(y) + eps||^2`` with ``y = x + sigma eps``, is minimised pointwise in ``y`` by

    s*(y) = E[sigma^2 grad log p_sigma(y) | y] / E[sigma^2 | y]
          = sum_k p(sigma_k | y) (E[x | y, sigma_k] - y) / sum_k p(sigma_k | y) sigma_k^2

(Tweedie: ``sigma^2 grad log p_sigma(y) = E[x | y, sigma] - y``), an average over the posterior of the
noise level, which concentrates on the true level in high dimension because ``||y - x||^2`` concentrates
at ``d sigma^2``. On a mixture of isotropic Gaussians every term is in closed form, for any dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class IsotropicMixture:
    """``sum_c w_c N(mu_c, tau_c^2 I)`` in ``R^d``: ``means`` (C, d), ``variances`` (C,) the ``tau_c^2``,
    ``weights`` (C,)."""

    means: torch.Tensor
    variances: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self):
        c = self.means.shape[0]
        if self.means.ndim != 2 or self.variances.shape != (c,) or self.weights.shape != (c,):
            raise ValueError(f"means must be (C, d), variances and weights (C,); got {tuple(self.means.shape)}, "
                             f"{tuple(self.variances.shape)}, {tuple(self.weights.shape)}")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` clean samples, (n, d)."""
        c = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        return self.means[c] + self.variances[c].sqrt()[:, None] * z

    def log_joint(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """``log w_c + log N(y; mu_c, (tau_c^2 + sigma^2) I)``, (B, C)."""
        v = self.variances + sigma ** 2
        sq = (y[:, None, :] - self.means[None]).pow(2).sum(-1)
        return torch.log(self.weights) - 0.5 * (sq / v + self.dim * torch.log(2 * math.pi * v))

    def posterior_mean(self, y: torch.Tensor, sigma: float) -> torch.Tensor:
        """``E[x | y]`` at noise level ``sigma``: ``sum_c p(c | y) (mu_c + tau_c^2 / (tau_c^2 + sigma^2) (y - mu_c))``."""
        post = torch.softmax(self.log_joint(y, sigma), dim=1)
        gain = self.variances / (self.variances + sigma ** 2)
        cond = self.means[None] + gain[None, :, None] * (y[:, None, :] - self.means[None])
        return (post[..., None] * cond).sum(1)


def random_mixture(dim: int, num_classes: int = 3, mean_std: float = 0.3, seed: int = 0) -> IsotropicMixture:
    """A mixture with means drawn ``N(0, mean_std^2 I)``, standard deviations 0.05, 0.1, 0.2, ... per class
    and equal weights, in float64."""
    g = torch.Generator().manual_seed(seed)
    means = mean_std * torch.randn(num_classes, dim, generator=g, dtype=torch.float64)
    stds = 0.05 * 2.0 ** torch.arange(num_classes, dtype=torch.float64)
    return IsotropicMixture(means, stds ** 2, torch.full((num_classes,), 1 / num_classes, dtype=torch.float64))


def noise_blind_score(mixture: IsotropicMixture, y: torch.Tensor, sigmas: torch.Tensor,
                      prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The minimiser ``s*(y)`` of the noise-blind DSM loss when ``sigma`` is drawn from the grid ``sigmas`` (K,)
    with probabilities ``prior`` (K,; uniform by default), and the posterior ``p(sigma_k | y)`` (B, K)."""
    prior = torch.full_like(sigmas, 1 / len(sigmas)) if prior is None else prior
    log_post = torch.stack([torch.logsumexp(mixture.log_joint(y, float(s)), dim=1) for s in sigmas], dim=1)
    post = torch.softmax(log_post + torch.log(prior), dim=1)  # (B, K)
    num = torch.zeros_like(y)
    for k, s in enumerate(sigmas):
        num += post[:, k:k + 1] * (mixture.posterior_mean(y, float(s)) - y)
    return num / (post * sigmas ** 2).sum(1, keepdim=True), post


def noise_blind_gap(dims, sigma: float, n: int = 500, sigma_min: float = 0.01, sigma_max: float = 1.0,
                    grid: int = 100, seed: int = 0) -> list[dict]:
    """For each dimension of ``dims``, on ``n`` noisy samples ``y = x + sigma eps`` of ``random_mixture(d)``:
    the MSE per coordinate of ``y``, of the optimal denoiser told ``sigma`` (``E[x | y, sigma]``) and of the
    noise-blind optimum ``y + sigma^2 s*(y)`` (training levels log-uniform on ``[sigma_min, sigma_max]``, a
    grid of ``grid`` points), the blind optimum's excess over the told one as a fraction of it, and the
    posterior standard deviation of ``log sigma`` given ``y`` (mean over samples)."""
    sigmas = torch.logspace(math.log10(sigma_min), math.log10(sigma_max), grid, dtype=torch.float64)
    rows = []
    for d in dims:
        mixture = random_mixture(int(d), seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        x = mixture.sample(n, g)
        y = x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)
        told = mixture.posterior_mean(y, sigma)
        score, post = noise_blind_score(mixture, y, sigmas)
        blind = y + sigma ** 2 * score
        log_s = torch.log(sigmas)
        mean = (post * log_s).sum(1, keepdim=True)
        sd = ((post * (log_s - mean) ** 2).sum(1)).sqrt().mean().item()
        mse = {k: (v - x).pow(2).mean().item() for k, v in (("noisy", y), ("told", told), ("blind", blind))}
        rows.append({"d": int(d), "mse noisy": mse["noisy"], "mse told sigma": mse["told"],
                     "mse noise-blind optimum": mse["blind"],
                     "relative excess": (mse["blind"] - mse["told"]) / mse["told"], "sd of log sigma | y": sd})
    return rows
