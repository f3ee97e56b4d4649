"""Gaussian mixtures with closed-form noisy densities and denoisers (chapter "Tweedie-Miyasawa",
and the exact tests of ``cdn.joint``).

For ``x ~ sum_c pi_c N(mu_c, S_c)`` and ``y = x + sigma eps``:

* ``log p(y, c) = log pi_c + log N(y; mu_c, S_c + sigma^2 I)``
* ``E[x | y, c] = mu_c + S_c (S_c + sigma^2 I)^{-1} (y - mu_c)``
* ``E[x | y] = sum_c p(c | y) E[x | y, c]``
"""
from __future__ import annotations

import math

import torch
from torch import nn


class GaussianMixture:
    """A mixture of ``C`` Gaussians in ``R^d``: ``means`` (C, d), ``covs`` (C, d, d), ``weights`` (C,)."""

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor | None = None):
        if means.ndim != 2 or covs.shape != (*means.shape, means.shape[1]):
            raise ValueError(f"means must be (C, d) and covs (C, d, d); got {tuple(means.shape)} and {tuple(covs.shape)}")
        self.means, self.covs = means, covs
        c = means.shape[0]
        self.weights = weights if weights is not None else torch.full((c,), 1 / c, dtype=means.dtype)
        if not torch.allclose(self.weights.sum(), torch.tensor(1.0, dtype=self.weights.dtype)):
            raise ValueError("weights must sum to 1")

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` samples ``(x, c)`` of the clean mixture."""
        c = torch.multinomial(self.weights.double(), n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype)
        x = self.means[c] + torch.einsum("nij,nj->ni", chol[c], z)
        return x, c

    def _noisy_covs(self, sigma: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(self.dim, dtype=self.covs.dtype, device=self.covs.device)
        return self.covs[None] + (sigma.view(-1, 1, 1, 1) ** 2) * eye  # (B, C, d, d)

    def log_joint(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``log p(y, c)`` for every class: (B, C); ``sigma`` has shape (B,)."""
        cov = self._noisy_covs(sigma)
        diff = y[:, None, :] - self.means[None]  # (B, C, d)
        chol = torch.linalg.cholesky(cov)
        sol = torch.cholesky_solve(diff.unsqueeze(-1), chol).squeeze(-1)
        maha = (diff * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights)[None] - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def posterior_mean(self, y: torch.Tensor, sigma: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """``E[x | y, c]`` (given ``c``) or ``E[x | y]``, in closed form."""
        cov = self._noisy_covs(sigma)
        diff = y[:, None, :] - self.means[None]
        gain = torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)  # (S + s^2 I)^{-1} (y - mu)
        cond = self.means[None] + torch.einsum("cij,bcj->bci", self.covs, gain)  # (B, C, d)
        if c is not None:
            return cond[torch.arange(y.shape[0]), c]
        post = torch.softmax(self.log_joint(y, sigma), dim=1)
        return (post[..., None] * cond).sum(1)


class MixtureLogits(nn.Module):
    """A "network" whose logits are the exact ``log p(y, c)`` of a Gaussian mixture at noise level
    sigma; wrapped in ``JointModel`` its denoisers must equal the closed forms."""

    noise_conditioning = True

    def __init__(self, mixture: GaussianMixture):
        super().__init__()
        self.mixture = mixture

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mixture.log_joint(y, sigma)


def two_moons_like_mixture(dtype=torch.float64) -> GaussianMixture:
    """A fixed 2-D, 3-class mixture with anisotropic covariances, used in tests and the theory chapter."""
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.5], [0.0, -1.2]], dtype=dtype)
    covs = torch.tensor([[[0.20, 0.08], [0.08, 0.10]],
                         [[0.10, -0.05], [-0.05, 0.15]],
                         [[0.05, 0.0], [0.0, 0.30]]], dtype=dtype)
    return GaussianMixture(means, covs, torch.tensor([0.5, 0.3, 0.2], dtype=dtype))
