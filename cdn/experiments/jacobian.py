"""The Jacobian of a denoiser (chapter "Jacobian"): ``J = dD/dy`` by autograd, its eigen-decomposition, and
how far ``D`` is from locally linear (``D(y) = J y`` holds exactly for a bias-free homogeneous network)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..joint import JointModel

# ---------------------------------------------------------------------- Tweedie on a mixture --


def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """The Jacobian ``J[i, j] = d fn(y)_i / d y_j`` of a map ``fn`` from (B, ...) to (B, ...) at one
    input ``y`` of shape (1, ...), as a (d, d) matrix, row by row: ``chunk`` copies of ``y`` go through
    ``fn`` in one batch and one backward pass returns ``chunk`` rows (the network must treat the images
    of a batch independently: no BatchNorm in training mode). ``fn`` must be differentiable in ``y``
    (for a joint model: ``lambda y: model.denoise(y, sigma, c, create_graph=True)``)."""
    if y.shape[0] != 1:
        raise ValueError(f"y must hold one input, shape (1, ...), got {tuple(y.shape)}")
    d = y[0].numel()
    rows = []
    for start in range(0, d, chunk):
        k = min(chunk, d - start)
        yk = y.detach().expand(k, *y.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            out = fn(yk).reshape(k, d)
            sel = torch.zeros(k, d, dtype=out.dtype, device=out.device)
            sel[torch.arange(k), torch.arange(start, start + k)] = 1
            (g,) = torch.autograd.grad(out, yk, grad_outputs=sel)
        rows.append(g.reshape(k, d).detach())
    return torch.cat(rows)


def jacobian_vector(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, v: torch.Tensor,
                    transpose: bool = False) -> torch.Tensor:
    """``J(y) v`` (or ``J(y)^T v`` with ``transpose``) for a batch ``y``, ``v`` of the same shape, by
    the double-backward trick (no full Jacobian)."""
    with torch.enable_grad():
        yy = y.detach().requires_grad_(True)
        out = fn(yy)
        if transpose:
            (g,) = torch.autograd.grad(out, yy, grad_outputs=v)
            return g.detach()
        u = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, yy, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(g, u, grad_outputs=v)
    return jv.detach()


def local_linearity_error(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor,
                          symmetric: bool = False, relative_to: str = "output") -> torch.Tensor:
    """``||D(y) - J(y) y|| / ||D(y)||`` per image of a batch ``y`` (zero for a homogeneous map,
    ``D(a y) = a D(y)``); with ``relative_to="correction"``, ``/ ||D(y) - y||`` instead (exactly 2 for
    ``D = y + sigma^2 s`` with ``s`` homogeneous of degree -1, chapter "What the referees asked").
    ``symmetric``: ``J`` is known to be symmetric (a joint model's ``J = I + sigma^2 H``), so
    ``J y = J^T y`` costs one backward pass fewer."""
    if relative_to not in ("output", "correction"):
        raise ValueError(f"relative_to must be 'output' or 'correction', got {relative_to!r}")
    with torch.no_grad():
        d = fn(y).detach() if not symmetric else None
    if symmetric:
        with torch.enable_grad():
            yy = y.detach().requires_grad_(True)
            out = fn(yy)
            (jy,) = torch.autograd.grad(out, yy, grad_outputs=y.detach())
        d, jy = out.detach(), jy.detach()
    else:
        jy = jacobian_vector(fn, y, y)
    ref = d if relative_to == "output" else d - y.detach()
    return (d - jy).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)


def joint_denoiser_fn(model: JointModel, sigma: float, c: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """``y -> D(y)`` (or ``D(y, c)``) of a joint model at a fixed ``sigma``, differentiable in ``y``
    (``create_graph=True``), for ``jacobian`` and ``local_linearity_error``."""
    def fn(y):
        cc = None if c is None else torch.full((y.shape[0],), int(c), device=y.device, dtype=torch.long)
        return model.denoise(y, sigma, cc, create_graph=True)
    return fn


@dataclass
class JacobianResult:
    """The eigen-decomposition of one (symmetrised) Jacobian: ``eigenvalues`` in decreasing order,
    ``eigenvectors`` as images (k, C, H, W) for the first ``k``, ``trace``, ``asymmetry`` =
    ||J - J^T|| / ||J|| (Frobenius), ``seconds`` to compute J and ``eig_seconds`` for the eigh."""

    eigenvalues: torch.Tensor
    eigenvectors: torch.Tensor
    trace: float
    asymmetry: float
    seconds: float
    eig_seconds: float


def jacobian_analysis(fn: Callable[[torch.Tensor], torch.Tensor], y: torch.Tensor, k: int = 8,
                      chunk: int = 256) -> JacobianResult:
    """Full Jacobian of ``fn`` at one image ``y`` (1, C, H, W), its asymmetry, and the eigenvalues
    and first ``k`` eigenvectors of its symmetric part (``torch.linalg.eigh`` in float64)."""
    t0 = time.perf_counter()
    J = jacobian(fn, y, chunk).double()
    t1 = time.perf_counter()
    asym = ((J - J.T).norm() / J.norm()).item()
    vals, vecs = torch.linalg.eigh(0.5 * (J + J.T))
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order], vecs[:, order[:k]]
    t2 = time.perf_counter()
    return JacobianResult(vals, vecs.T.reshape(k, *y.shape[1:]).float(), float(torch.trace(J)), asym, t1 - t0, t2 - t1)


def eigenvector_images(vectors: torch.Tensor) -> torch.Tensor:
    """Eigenvectors (k, C, H, W) rescaled for display: each to [0, 1] with 0.5 at zero."""
    m = vectors.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *([1] * (vectors.ndim - 1)))
    return 0.5 + 0.5 * vectors / m


def jacobian_sweep(model: JointModel, x: torch.Tensor, sigmas, c: torch.Tensor | None = None, k: int = 8,
                   seed: int = 0, chunk: int = 256) -> list[dict]:
    """For each clean image of ``x`` (B, C, H, W) and each sigma: one noisy ``y`` (fixed seed), the full
    Jacobian of ``D(y)`` (and, when ``c`` (B,) is given, of ``D(y, c)``) and its analysis. Returns rows
    ``{"image", "sigma", "denoiser", "result": JacobianResult, "mse": ||D(y) - x||^2 / d,
    "posterior_variance": sigma^2 trace(J) / d, "sure": (||D(y) - y||^2 + 2 sigma^2 trace(J)) / d - sigma^2}``.
    ``posterior_variance`` equals the expected MSE for the optimal denoiser only (``J = Cov[x | y] / sigma^2``);
    ``sure``, Stein's unbiased risk estimate, has the expected MSE as its expectation for any (weakly
    differentiable) denoiser, computed from ``y`` alone."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        for s in sigmas:
            y = xi + float(s) * torch.randn(xi.shape, generator=g)
            for name, cls in (("D(y)", None), ("D(y,c)", None if c is None else int(c[i]))):
                if name == "D(y,c)" and cls is None:
                    continue
                fn = joint_denoiser_fn(model, float(s), cls)
                res = jacobian_analysis(fn, y, k, chunk)
                d = xi[0].numel()
                out = fn(y).detach()
                mse = (out - xi).pow(2).mean().item()
                sure = ((out - y).pow(2).sum().item() + 2 * float(s) ** 2 * res.trace) / d - float(s) ** 2
                rows.append({"image": i, "sigma": float(s), "denoiser": name, "result": res, "mse": mse,
                             "posterior_variance": float(s) ** 2 * res.trace / d, "sure": sure})
    return rows
