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

Convolution, ``y = W * x`` (``conv``): its backward is linear in ``g`` and in ``W`` and in ``x``,
    ``dL/dx = W^T g`` (``conv_transpose``), ``dL/dW = g (x) x`` (oneDNN's weight-gradient kernel),
and the backward of ``W^T g`` for an incoming ``u`` is ``W * u`` (a forward convolution) with respect to
``g`` and ``g (x) u`` (the weight-gradient kernel again) with respect to ``W``. PyTorch's own double
backward of a convolution computes that last product as a convolution of the batch-transposed
tensors (a kernel the size of the image), which oneDNN runs several times slower than its
weight-gradient kernel. Inside ``input_gradient_only()`` (the score pass of ``cdn.joint``, which
differentiates with respect to the image only) the first backward skips the weight gradient.

A third derivative is refused (``once_differentiable``). ``second_order_layers()`` switches the
layers of ``cdn.nets.resnet`` (GroupNorm, GELU and ``Conv2d``) to these functions inside its ``with`` block; outside it they use
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
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

_ACTIVE = False
_INPUT_ONLY = False


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


@contextlib.contextmanager
def input_gradient_only():
    """Inside the block, a first backward through ``conv2d`` returns no weight or bias gradient (for a
    backward pass that differentiates with respect to the input only, as the score ``grad_y E`` does)."""
    global _INPUT_ONLY
    before, _INPUT_ONLY = _INPUT_ONLY, True
    try:
        yield
    finally:
        _INPUT_ONLY = before


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


#: False: ``Conv2d`` keeps PyTorch's convolution inside ``second_order_layers()`` (a benchmark's ablation)
CONV = True

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


def _conv_backward(g, x, w, conf, mask):
    """``(W^T g, g (x) x, None)`` as ``mask`` asks: ``aten.convolution_backward`` (oneDNN's kernels on a CPU)."""
    stride, padding, dilation, groups = conf
    return torch.ops.aten.convolution_backward(g, x, w, None, stride, padding, dilation, False, [0, 0], groups, mask)


class _ConvWeightGrad(torch.autograd.Function):
    """``dL/dW = g (x) x``: bilinear in ``(g, x)``; its backward is ``x * u`` for ``g`` and ``u^T g`` for ``x``."""

    @staticmethod
    def forward(ctx, g, x, w, conf):
        ctx.save_for_backward(g, x, w)
        ctx.conf = conf
        return _conv_backward(g, x, w, conf, [False, True, False])[1]

    @staticmethod
    @once_differentiable
    def backward(ctx, u):
        g, x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        du_g = F.conv2d(x, u, None, stride, padding, dilation, groups) if ctx.needs_input_grad[0] else None
        du_x = _conv_backward(g, x, u, ctx.conf, [True, False, False])[0] if ctx.needs_input_grad[1] else None
        return du_g, du_x, None, None


class _ConvInputGrad(torch.autograd.Function):
    """``dL/dx = W^T g``: bilinear in ``(g, W)``; its backward is ``W * u`` for ``g`` and ``g (x) u`` for ``W``."""

    @staticmethod
    def forward(ctx, g, x, w, conf):
        ctx.save_for_backward(g, x, w)
        ctx.conf = conf
        return _conv_backward(g, x, w, conf, [True, False, False])[0]

    @staticmethod
    @once_differentiable
    def backward(ctx, u):
        g, x, w = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        du_g = F.conv2d(u, w, None, stride, padding, dilation, groups) if ctx.needs_input_grad[0] else None
        du_w = _conv_backward(g, u, w, ctx.conf, [False, True, False])[1] if ctx.needs_input_grad[2] else None
        return du_g, None, du_w, None


class _Conv(torch.autograd.Function):
    """``W * x + b``; its backward by ``_ConvInputGrad`` and ``_ConvWeightGrad`` (one oneDNN call when no
    graph is built)."""

    @staticmethod
    def forward(ctx, x, w, b, conf):
        ctx.save_for_backward(x, w)
        ctx.conf = conf
        ctx.has_bias = b is not None
        stride, padding, dilation, groups = conf
        return F.conv2d(x, w, b, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if _INPUT_ONLY:
            need_w = need_b = False
        if torch.is_grad_enabled():  # create_graph: a gradient that is differentiated again
            gx = _ConvInputGrad.apply(g, x, w, ctx.conf) if need_x else None
            gw = _ConvWeightGrad.apply(g, x, w, ctx.conf) if need_w else None
        else:
            gx, gw, _ = _conv_backward(g, x, w, ctx.conf, [need_x, need_w, False])
        gb = g.sum((0, 2, 3)) if need_b and ctx.has_bias else None
        return gx, gw, gb, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, stride=(1, 1), padding=(0, 0),
           dilation=(1, 1), groups: int = 1) -> torch.Tensor:
    """``F.conv2d`` (zero padding given as numbers) with the closed-form double backward of the module docstring."""
    if isinstance(padding, str):
        raise ValueError(f"conv2d needs padding as numbers, got {padding!r}")
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return _Conv.apply(x, weight, bias, (pair(stride), pair(padding), pair(dilation), groups))


class Conv2d(torch.nn.Conv2d):
    """``nn.Conv2d`` (same parameters and state dict) that uses ``conv2d`` inside ``second_order_layers()``
    with zero padding (under autocast, on inputs cast to autocast's dtype); PyTorch's own convolution otherwise."""

    def _conv_forward(self, input, weight, bias):
        if not (_ACTIVE and CONV) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        device = input.device.type
        if torch.is_autocast_enabled(device):  # autocast's cast, done here so that the gradients share one dtype
            dtype = torch.get_autocast_dtype(device)
            input, weight = input.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
            with torch.autocast(device, enabled=False):
                return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


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


#: how a run or a benchmark row names the second derivatives these layers give
DESCRIPTION = "closed form (GroupNorm, GELU compiled; convolutions by oneDNN's gradient kernels)"

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
