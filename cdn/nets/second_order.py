"""GroupNorm and GELU with hand-written second derivatives, for the joint loss's double backward
(chapter "Efficiency").

The joint loss differentiates the score ``grad_y logsumexp f(y)``, itself a backward pass, so training
runs the derivative of every layer's backward. PyTorch builds the derivative of GroupNorm's backward
out of some twenty elementwise operations on the full activation tensor (its composite
``infinitely_differentiable_native_group_norm_backward``), and GELU's from several more; on a CPU
these, not the convolutions, take about half of a float32 joint step. Here each has its backward as
a ``torch.autograd.Function`` whose own backward is the closed form:

GroupNorm without affine, per group of ``N`` values, ``xh = (x - mean) / s``, ``s = sqrt(var + eps)``;
its backward is linear in the incoming gradient ``g``:
    ``B(x, g) = (g - mean(g) - xh mean(g xh)) / s``
and, for the gradient ``u`` arriving at ``B``,
    ``dB/dg^T u = B(x, u)``   (the map is symmetric),
    ``dB/dx^T u = -(xh (mean(u g) - mean(u) mean(g) - 3 a b) + b (g - mean(g)) + a (u - mean(u))) / s^2``,
with ``a = mean(g xh)``, ``b = mean(u xh)``. GELU, ``gelu(x) = x Phi(x)``:
    ``gelu'(x) = Phi(x) + x phi(x)``, ``gelu''(x) = phi(x) (2 - x^2)``.

A third derivative is refused (``once_differentiable``). ``second_order_layers()`` switches the
layers of ``cdn.nets.resnet`` to these functions inside its ``with`` block; outside it they use
PyTorch's own. The second-derivative terms run as kernels fused by ``torch.compile`` (one loop per
layer shape, compiled once per process, about 30 s the first time on a CPU and a few seconds from the
inductor cache): written as separate PyTorch operations they are slower than PyTorch's own.
``use_second_order`` decides for a training run: the joint objective, ``$CDN_SECOND_ORDER`` not
``off``, and ``torch.compile`` working on this machine (``compiler_works``). The values equal
PyTorch's up to float32 rounding (tests/test_second_order.py).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings

import torch
from torch.autograd.function import once_differentiable

_ACTIVE = False


def active() -> bool:
    """Whether the layers of ``cdn.nets.resnet`` use the functions of this module now."""
    return _ACTIVE


@contextlib.contextmanager
def second_order_layers(enabled: bool = True):
    """Inside the block, GroupNorm and GELU of ``cdn.nets.resnet`` use ``group_norm`` and ``gelu`` below."""
    global _ACTIVE
    before, _ACTIVE = _ACTIVE, bool(enabled)
    try:
        yield
    finally:
        _ACTIVE = before


def _grouped(t: torch.Tensor, groups: int) -> torch.Tensor:
    return t.reshape(t.shape[0], groups, -1)


def _gn_grads(g, u, x, mean, rstd, groups: int):
    """``(dB/dg^T u, dB/dx^T u)`` of the module docstring: ``(u - mean(u) - xh b) / s`` and
    ``-(xh k + b g + a u - (b mean(g) + a mean(u))) / s^2`` with ``k = mean(u g) - mean(u) mean(g) - 3 a b``."""
    n = x.shape[0]
    gg, ug, r = _grouped(g, groups), _grouped(u, groups), rstd.view(n, groups, 1)
    xh = (_grouped(x, groups) - mean.view(n, groups, 1)) * r
    g_mean, u_mean = gg.mean(2, keepdim=True), ug.mean(2, keepdim=True)
    a, b = (gg * xh).mean(2, keepdim=True), (ug * xh).mean(2, keepdim=True)
    k = (ug * gg).mean(2, keepdim=True) - u_mean * g_mean - 3 * a * b
    du = (ug - u_mean - xh * b) * r
    du_x = (xh * k + b * gg + a * ug - (b * g_mean + a * u_mean)) * (-r * r)
    return du.reshape(x.shape), du_x.reshape(x.shape)


def _gelu_grads(g, u, x):
    """``(u gelu'(x), u g gelu''(x))`` with ``gelu' = Phi + x phi`` and ``gelu'' = phi (2 - x^2)``."""
    x2 = x * x
    pdf = torch.exp(x2 * -0.5) * _INV_SQRT_2PI
    cdf = 0.5 * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))
    return u * (cdf + x * pdf), u * g * pdf * (2.0 - x2)


_EAGER = {"gn": _gn_grads, "gelu": _gelu_grads}
_COMPILED: dict = {}
FUSE = True


def _kernel(name: str):
    """The function computing ``name``'s second-derivative terms: compiled by ``torch.compile`` (one fused
    loop per layer shape: dynamic shapes were 20% slower; past dynamo's limit of 8 shapes per function,
    as in the tests, it runs eagerly) when ``FUSE``, the eager version otherwise."""
    if not FUSE:
        return _EAGER[name]
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(_EAGER[name], dynamic=False)
    return _COMPILED[name]


class _GroupNormBackward(torch.autograd.Function):
    """``B(x, g) = (g - mean(g) - xh mean(g xh)) / s`` per group, with its closed-form backward."""

    @staticmethod
    def forward(ctx, g, x, mean, rstd, groups: int):
        ctx.save_for_backward(g, x, mean, rstd)
        ctx.groups = groups
        n, c = x.shape[:2]
        hw = x[0, 0].numel()
        return torch.ops.aten.native_group_norm_backward(g, x, mean, rstd, None, n, c, hw, groups,
                                                         [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, u):
        g, x, mean, rstd = ctx.saved_tensors
        du, du_x = _kernel("gn")(g, u, x, mean, rstd, ctx.groups)
        return du, du_x, None, None, None


class _GroupNorm(torch.autograd.Function):
    """``(x - mean) / sqrt(var + eps)`` per group of channels (no affine), backward by ``_GroupNormBackward``."""

    @staticmethod
    def forward(ctx, x, groups: int, eps: float):
        n, c = x.shape[:2]
        out, mean, rstd = torch.ops.aten.native_group_norm(x, None, None, n, c, x[0, 0].numel(), groups, eps)
        ctx.save_for_backward(x, mean, rstd)
        ctx.groups = groups
        return out

    @staticmethod
    def backward(ctx, g):
        x, mean, rstd = ctx.saved_tensors
        return _GroupNormBackward.apply(g, x, mean, rstd, ctx.groups), None, None


def group_norm(x: torch.Tensor, groups: int, eps: float = 1e-5) -> torch.Tensor:
    """``F.group_norm(x, groups, eps=eps)`` without affine, with the closed-form second derivative."""
    if x.ndim < 3 or x.shape[1] % groups:
        raise ValueError(f"group_norm needs x of shape (B, C, ...) with C divisible by {groups}, got {tuple(x.shape)}")
    return _GroupNorm.apply(x, groups, eps)


_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class _GeluBackward(torch.autograd.Function):
    """``g * gelu'(x)``, with ``gelu''(x) = phi(x) (2 - x^2)`` in its backward."""

    @staticmethod
    def forward(ctx, g, x):
        ctx.save_for_backward(g, x)
        return torch.ops.aten.gelu_backward(g, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, u):
        g, x = ctx.saved_tensors
        return _kernel("gelu")(g, u, x)


class _Gelu(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.nn.functional.gelu(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return _GeluBackward.apply(g, x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """``x Phi(x)`` (exact GELU) with the closed-form second derivative."""
    return _Gelu.apply(x)


#: ``$CDN_SECOND_ORDER``: ``auto`` (the default: on for the joint loss where ``torch.compile`` works),
#: ``on`` (on for the joint loss; an error where the compiler fails) or ``off`` (PyTorch's own layers)
SETTINGS = ("auto", "on", "off")
_COMPILER_WORKS: dict[str, bool] = {}


def compiler_works(device: torch.device | str = "cpu") -> bool:
    """Whether ``torch.compile`` builds and runs the two kernels of this module on ``device`` (tried once per
    process on tiny tensors: a machine without a C++ compiler, or a GPU without Triton, says False)."""
    key = torch.device(device).type
    if key not in _COMPILER_WORKS:
        try:
            t = torch.randn(2, 4, 2, 2, device=device)
            stats = torch.zeros(2, 2, device=device)
            _kernel("gn")(t, t, t, stats, stats + 1, 2)
            _kernel("gelu")(t, t, t)
            _COMPILER_WORKS[key] = True
        except Exception as err:  # noqa: BLE001 - any compiler failure means: use PyTorch's layers
            warnings.warn(f"torch.compile does not work here ({type(err).__name__}: {str(err)[:200]}); the joint "
                          "loss uses PyTorch's own second derivatives")
            _COMPILER_WORKS[key] = False
    return _COMPILER_WORKS[key]


#: below this many steps ``auto`` keeps PyTorch's layers: the compilation (tens of seconds) would cost more
#: than it saves (the smoke profile's runs)
MIN_STEPS = 100


def use_second_order(objective: str, device: torch.device | str = "cpu", steps: int | None = None) -> bool:
    """Whether a training run of ``objective`` and ``steps`` steps uses these layers: only the joint loss has
    a double backward; with ``$CDN_SECOND_ORDER`` = ``auto`` (default) when the compiler works here and the
    run has at least ``MIN_STEPS`` steps; ``on`` and ``off`` force it (``SETTINGS``)."""
    setting = os.environ.get("CDN_SECOND_ORDER", "auto")
    if setting not in SETTINGS:
        raise ValueError(f"CDN_SECOND_ORDER must be one of {SETTINGS}, got {setting!r}")
    if objective != "joint" or setting == "off":
        return False
    if setting == "on":
        if not compiler_works(device):
            raise RuntimeError("CDN_SECOND_ORDER=on but torch.compile fails on this machine; set it to auto or off")
        return True
    return (steps is None or steps >= MIN_STEPS) and compiler_works(device)
