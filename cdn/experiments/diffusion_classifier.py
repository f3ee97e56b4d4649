"""Classify by denoising: the readout of diffusion classifiers (Li et al., 2023, "Your diffusion model is
secretly a zero-shot classifier"), computed from a joint model's own class-conditional denoiser.

For a clean image ``x`` and each class ``c``, the error of the conditional denoiser averaged over noise
levels and draws approximates ``-log p(x | c)`` up to terms that do not depend on ``c`` (the ELBO of a
diffusion model, with DSM's weight ``1 / sigma^2``):

    err_c(x) = mean_{sigma, eps} ||D(x + sigma eps, c) - x||^2 / (d sigma^2),    c_hat = argmin_c err_c(x),

with the same noise draws for every class (Li et al.'s paired noise, which cancels most of the variance
of the comparison). With a uniform class prior ``argmin_c err_c`` is the Bayes decision under that
approximation. It costs, per image, one forward and ``C`` backward passes per noise draw, against the one
forward pass of ``argmax_c f_c(x)``.
"""
from __future__ import annotations

import math

import torch

from ..data import ImageDataset
from ..joint import JointModel

#: noise levels of the readout: log-spaced over the training range where the denoiser is informative
DEFAULT_SIGMAS = tuple(float(s) for s in torch.logspace(math.log10(0.02), math.log10(0.5), 8))


def conditional_errors(model: JointModel, x: torch.Tensor, sigmas=DEFAULT_SIGMAS, draws: int = 1,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``err_c(x)`` of the module docstring for every class: (B, C). ``D(y, c) = y + sigma^2 grad_y f_c(y)``
    for all classes from one forward pass per noisy image (one backward per class)."""
    if x.ndim < 2:
        raise ValueError(f"x must be a batch (B, ...) of images or vectors, got shape {tuple(x.shape)}")
    if draws < 1 or not len(sigmas):
        raise ValueError(f"need draws >= 1 and at least one sigma, got draws={draws}, sigmas={sigmas}")
    d = x[0].numel()
    total = None
    for sigma in sigmas:
        for _ in range(draws):
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            y = (x + sigma * eps).detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model.logits(y, torch.full((x.shape[0],), float(sigma), device=x.device))
                errs = []
                for c in range(logits.shape[1]):
                    (g,) = torch.autograd.grad(logits[:, c].float().sum(), y, retain_graph=c + 1 < logits.shape[1])
                    denoised = y.detach() + sigma ** 2 * g
                    errs.append((denoised - x).pow(2).flatten(1).sum(1) / (d * sigma ** 2))
            err = torch.stack(errs, dim=1)
            total = err if total is None else total + err
    return total / (len(sigmas) * draws)


@torch.no_grad()
def readout_accuracy(model: JointModel, data: ImageDataset, sigmas=DEFAULT_SIGMAS, draws: int = 1,
                     batch_size: int = 100, seed: int = 0, device=None) -> dict:
    """Clean accuracy of the denoising readout ``argmin_c err_c(x)`` and of the forward pass ``argmax_c f_c(x)``
    on ``data``, their agreement, and the network evaluations per image of each (forward passes plus backward
    passes, each counted as one)."""
    device = device or "cpu"
    g = torch.Generator(device=device).manual_seed(seed)
    correct_readout = correct_forward = agree = 0
    num_classes = data.num_classes
    for start in range(0, len(data), batch_size):
        x = data.to_float(slice(start, start + batch_size), device)
        c = data.labels[start:start + batch_size].to(device)
        pred_readout = conditional_errors(model, x, sigmas, draws, g).argmin(1)
        pred_forward = model.logits(x, torch.zeros(x.shape[0], device=device)).argmax(1)
        correct_readout += (pred_readout == c).sum().item()
        correct_forward += (pred_forward == c).sum().item()
        agree += (pred_readout == pred_forward).sum().item()
    n = len(data)
    return {"images": n, "sigmas": list(sigmas), "draws": draws, "readout_accuracy": correct_readout / n,
            "forward_accuracy": correct_forward / n, "agreement": agree / n,
            "evaluations_readout": len(sigmas) * draws * (1 + num_classes), "evaluations_forward": 1}
