"""The joint loss as one pure function of the parameters, so that ``torch.compile`` can compile the
double backward (chapter "Efficiency").

``torch.compile`` of the network fails on the joint loss (torch 2.14.1: "torch.compile with
aot_autograd does not currently support double backward"): AOTAutograd compiles the network's
backward into an opaque function without a backward of its own, and the score kept with
``create_graph=True`` asks for exactly that. Written with ``torch.func`` instead, the score
``grad_y logsumexp f(y)`` is part of the function being compiled, so AOTAutograd traces it as
forward operations and derives the parameters' gradient of the whole loss itself.

``joint_loss`` equals ``cdn.losses.JointLoss()`` (cross-entropy on the noisy images, DSM weighted
by 1/sigma^2, every image noisy) for the same ``sigma`` and ``eps``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad_and_value

from ..losses import dsm_per_image


def joint_loss(net: torch.nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, c: torch.Tensor,
               sigma: torch.Tensor, eps: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """``CE(f(y), c) + lam * mean ||sigma * grad_y logsumexp f(y) + eps||^2 / d`` with ``y = x + sigma eps``
    and ``f = functional_call(net, params)``: one forward, the score by ``torch.func.grad_and_value``."""
    if sigma.shape != (x.shape[0],) or eps.shape != x.shape:
        raise ValueError(f"sigma must have shape ({x.shape[0]},) and eps {tuple(x.shape)}, "
                         f"got {tuple(sigma.shape)} and {tuple(eps.shape)}")
    y = x + sigma.view(-1, *([1] * (x.ndim - 1))) * eps

    def log_p(y_):
        logits = functional_call(net, params, (y_,))
        return torch.logsumexp(logits.float(), dim=-1).sum(), logits

    score, (_, logits) = grad_and_value(log_p, has_aux=True)(y)
    return F.cross_entropy(logits.float(), c) + lam * dsm_per_image(score, eps, sigma).mean()
