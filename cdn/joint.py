"""The joint model p(y, c) around any classifier network ``f(y) -> logits``.

``log p(y, c) = f(y)_c + const(sigma)``, so

* classification:  ``log p(c | y) = log_softmax(f(y))_c``
* marginal:        ``log p(y) = logsumexp_c f(y)_c + const``
* score:           ``grad_y log p(y)`` (or ``grad_y log p(y, c)``) by autograd
* Tweedie-Miyasawa: ``D(y) = y + sigma^2 grad_y log p(y)`` and ``D(y, c) = y + sigma^2 grad_y f(y)_c``

This module is the only place that calls autograd for scores (chapters "Tweedie-Miyasawa" and
"Training the joint model").
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .nets import second_order
from .nets.resnet import upcast


def as_sigma(sigma, y: torch.Tensor, name: str = "sigma", required: bool = True) -> torch.Tensor | None:
    """Return ``sigma`` as a float tensor of shape (B,) on ``y``'s device, after checking it.

    Accepts a Python number, a 0-d tensor or a (B,) tensor; raises ``ValueError`` for a negative,
    NaN or infinite value or a wrong shape.
    """
    if sigma is None:
        if required:
            raise ValueError(f"{name} is required here: expected a float >= 0 or a tensor of shape ({y.shape[0]},)")
        return None
    batch = y.shape[0]
    if isinstance(sigma, (int, float)):
        if not math.isfinite(sigma) or sigma < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {sigma!r}")
        return torch.full((batch,), float(sigma), device=y.device, dtype=y.dtype)
    if not isinstance(sigma, torch.Tensor):
        raise ValueError(f"{name} must be a float or a torch.Tensor, got {type(sigma).__name__}")
    if sigma.ndim == 0:
        sigma = sigma.expand(batch)
    elif sigma.ndim != 1 or sigma.shape[0] != batch:
        raise ValueError(f"{name} must be a scalar or have shape ({batch},), got shape {tuple(sigma.shape)}")
    if not torch.isfinite(sigma).all() or (sigma < 0).any():
        raise ValueError(f"{name} must be finite and >= 0 everywhere, got min={sigma.min().item()}")
    return sigma.to(device=y.device, dtype=y.dtype)


def check_image(y: torch.Tensor, name: str = "y") -> None:
    """Raise ``ValueError`` unless ``y`` is a finite floating tensor of shape (B, ...) with B >= 1."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(y).__name__}")
    if not y.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (pixels in [0, 1]), got dtype {y.dtype}")
    if y.ndim < 2 or y.shape[0] == 0:
        raise ValueError(f"{name} must have shape (B, C, H, W) (or (B, d)), got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError(f"{name} contains NaN or infinite values")


def _finite(out: torch.Tensor, y: torch.Tensor, what: str) -> torch.Tensor:
    """Return ``out``, or raise ``ValueError`` when it holds NaN or infinity (absurd inputs)."""
    if not torch.isfinite(out).all():
        raise ValueError(f"{what} gave non-finite values for this y (max |y| = {y.detach().abs().max().item():.3g}); "
                         "expected pixels on the [0, 1] scale")
    return out


def _expand(sigma: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return sigma.view(-1, *([1] * (y.ndim - 1)))


class JointModel(nn.Module):
    """Joint model of a noisy image ``y`` and its class ``c``: ``log p(y, c) = net(y)_c + const``.

    ``net`` is any module mapping ``y`` of shape (B, ...) to logits (B, C); when it has an attribute
    ``noise_conditioning = True`` it is called as ``net(y, sigma)`` with ``sigma`` of shape (B,).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    @property
    def noise_conditioned(self) -> bool:
        return bool(getattr(self.net, "noise_conditioning", False))

    def logits(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        """``f(y)``: the unnormalised ``log p(y, c)``, shape (B, C)."""
        check_image(y)
        param = next(self.net.parameters(), None)
        if param is not None and param.is_floating_point() and y.dtype != param.dtype:
            raise ValueError(f"y has dtype {y.dtype} but the network's parameters are {param.dtype}: "
                             f"convert one of them (y.to({param.dtype}))")
        if self.noise_conditioned:
            sig = as_sigma(sigma, y, required=True)
            out = self.net(y, sig)
        else:
            if sigma is not None:
                as_sigma(sigma, y)  # validate even when the net ignores it
            out = self.net(y)
        if out.ndim != 2 or out.shape[0] != y.shape[0]:
            raise ValueError(f"net must return logits of shape (B, C) = ({y.shape[0]}, C), got {tuple(out.shape)}")
        return out

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        return self.logits(y, sigma)

    def classify(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        """``log p(c | y) = log_softmax(f(y))``, shape (B, C)."""
        return _finite(torch.log_softmax(upcast(self.logits(y, sigma)), dim=-1), y, "classify")

    def log_marginal(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        """``log p(y) = logsumexp_c f(y)_c`` (up to a constant in y), shape (B,)."""
        return _finite(torch.logsumexp(upcast(self.logits(y, sigma)), dim=-1), y, "log_marginal")

    def logits_and_score(self, y: torch.Tensor, sigma=None, c: torch.Tensor | None = None,
                         create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward and one backward pass: return ``(f(y), grad_y E(y))`` where the energy is
        ``E = logsumexp_c f(y)_c`` when ``c`` is None and ``E = f(y)_c`` otherwise.

        With ``create_graph=True`` the score stays differentiable with respect to the parameters
        (the double backward of denoising score matching). Works inside ``torch.no_grad()``.
        """
        check_image(y)
        if c is not None:
            if not isinstance(c, torch.Tensor) or c.dtype not in (torch.int64, torch.int32) or c.shape != (y.shape[0],):
                raise ValueError(f"c must be an integer tensor of shape ({y.shape[0]},), got "
                                 f"{getattr(c, 'dtype', type(c).__name__)} {tuple(getattr(c, 'shape', ()))}")
        with torch.enable_grad():
            y_in = y if (y.requires_grad and create_graph) else y.detach().requires_grad_(True)
            logits = self.logits(y_in, sigma)
            if c is not None:
                n_classes = logits.shape[1]
                if (c < 0).any() or (c >= n_classes).any():
                    raise ValueError(f"c must hold class indices in [0, {n_classes - 1}], got {c.tolist()[:8]}")
                energy = upcast(logits).gather(1, c.long().view(-1, 1)).sum()
            else:
                energy = torch.logsumexp(upcast(logits), dim=-1).sum()
            with second_order.input_gradient_only():  # the parameters' gradients are not wanted here
                (score,) = torch.autograd.grad(energy, y_in, create_graph=create_graph)
        if not create_graph:
            logits, score = logits.detach(), score.detach()
        return logits, score

    def score_parts(self, y: torch.Tensor, sigma=None, c: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The score split along the net's ``logit_parts`` (``f_c = features_c + energy``, energy shared by the
        classes): ``{"features": grad_y logsumexp_c features_c(y), "energy": grad_y energy(y)}`` (with ``c``:
        ``grad_y features_c(y)``). Exact: since ``logsumexp_c(a_c + e) = logsumexp_c(a_c) + e``, the parts sum
        to ``score(y, sigma, c)``. A net without ``logit_parts`` (or without an energy) has the one part
        ``"features"``, its whole score. Detached, shapes of ``y`` (chapter "Denoising")."""
        check_image(y)
        if not hasattr(self.net, "logit_parts"):
            return {"features": self.score(y, sigma, c)}
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            if self.noise_conditioned:
                parts = self.net.logit_parts(y_in, as_sigma(sigma, y, required=True))
            else:
                parts = self.net.logit_parts(y_in)
            feats = upcast(parts["features"])
            read = feats.gather(1, c.long().view(-1, 1)) if c is not None else torch.logsumexp(feats, dim=-1)
            terms = {"features": read.sum()}
            if "energy" in parts:
                terms["energy"] = upcast(parts["energy"]).sum()
            names = list(terms)
            grads = [torch.autograd.grad(terms[k], y_in, retain_graph=i + 1 < len(names), allow_unused=True)[0]
                     for i, k in enumerate(names)]
        return {k: (torch.zeros_like(y) if g is None else g.detach()) for k, g in zip(names, grads)}

    def score(self, y: torch.Tensor, sigma=None, c: torch.Tensor | None = None,
              create_graph: bool = False) -> torch.Tensor:
        """``grad_y log p(y)`` (``c`` None) or ``grad_y log p(y, c)``, same shape as ``y``."""
        return self.logits_and_score(y, sigma, c, create_graph)[1]

    def denoise(self, y: torch.Tensor, sigma, c: torch.Tensor | None = None,
                create_graph: bool = False) -> torch.Tensor:
        """Tweedie-Miyasawa: ``D(y) = y + sigma^2 grad_y log p(y)`` (or ``D(y, c)`` with ``c``)."""
        check_image(y)
        sig = as_sigma(sigma, y)
        if not torch.isfinite(sig ** 2).all():
            raise ValueError(f"sigma^2 overflows {y.dtype} (max sigma {sig.max().item():.3g}); expected sigma on the [0, 1] pixel scale")
        s = self.score(y, sig, c, create_graph)
        return _finite(y + _expand(sig, y) ** 2 * s, y, "denoise")

    def class_gradient(self, y: torch.Tensor, sigma=None, c: torch.Tensor | None = None) -> torch.Tensor:
        """``grad_y log p(c | y)`` by autograd, for comparison with ``(D(y, c) - D(y)) / sigma^2``
        (the adversarial gradient as a difference of denoisers, chapter "Robustness")."""
        if c is None:
            raise ValueError("c is required: an integer tensor of shape (B,)")
        with torch.enable_grad():
            y_in = y.detach().requires_grad_(True)
            logp = self.classify(y_in, sigma).gather(1, c.long().view(-1, 1)).sum()
            (g,) = torch.autograd.grad(logp, y_in)
        return g
