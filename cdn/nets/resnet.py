"""A configurable CIFAR ResNet-18 (3x3 stem, stride 1, four stages of two basic blocks, widths
w-2w-4w-8w) from which both the discriminative baseline ``ResNet18`` (BatchNorm, ReLU, biases) and
the paper's ``GradResNet`` (GELU, shift-free GroupNorm, no bias, side connections) are built, so that
ablations differ in one switch (chapters "Classification" and "GradResNet as a UNet").
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from torch import nn

from . import second_order

SIGMA_EMBED_DIM = 16


def sigma_embedding(sigma: torch.Tensor, dim: int = SIGMA_EMBED_DIM) -> torch.Tensor:
    """Fourier features of ``log sigma``: ``[sin(k log s), cos(k log s)]`` for k in a geometric range,
    with sigma clamped below at 1e-4 (so sigma = 0 is allowed). Shape (B, dim)."""
    log_s = torch.log(sigma.float().clamp_min(1e-4)).view(-1, 1)
    freqs = torch.logspace(-1.5, 0.5, dim // 2, device=sigma.device).view(1, -1)
    return torch.cat([torch.sin(freqs * log_s), torch.cos(freqs * log_s)], dim=1)


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float32 for half-precision tensors (bf16 autocast), unchanged otherwise (float64 stays)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups: gcd(channels, max_groups)."""
    return math.gcd(channels, max_groups)


class ScaleGroupNorm(nn.Module):
    """GroupNorm with a multiplicative gain and no additive shift:
    ``GN(h) = gain * (h - mean_g) / sqrt(var_g + eps)``. With noise conditioning the gain is
    ``weight * (1 + A e(sigma))`` for a bias-free linear map ``A`` (zero-initialised) of the sigma
    embedding ``e``.

    ``homogeneous=True`` is the scale-preserving variant of the authors' group's later GradResNet
    (the paper's description): each group is divided by its own spread ``s_g`` and all are multiplied by the mean
    spread over the groups of the image, ``N(h)_g = gain * (h_g - mean_g) * mean_k(s_k) / s_g``, so that
    ``N(a h) = a N(h)`` for ``a > 0`` (the layer evens out the groups and keeps the overall scale). The
    stabiliser is relative (``s_g^2 = var_g + eps * mean_k var_k``), which keeps the identity exact.
    ``channels_per_group`` fixes the group size (8 in that network); otherwise ``gcd(C, 32)`` groups."""

    def __init__(self, channels: int, noise_conditioning: bool = False, eps: float = 1e-5,
                 homogeneous: bool = False, channels_per_group: int | None = None):
        super().__init__()
        self.groups = (max(1, channels // channels_per_group) if channels_per_group else group_count(channels))
        if channels % self.groups:
            raise ValueError(f"{channels} channels cannot be split into groups of {channels_per_group}")
        self.eps = eps
        self.homogeneous = homogeneous
        self.weight = nn.Parameter(torch.ones(channels))
        self.cond = nn.Linear(SIGMA_EMBED_DIM, channels, bias=False) if noise_conditioning else None
        if self.cond is not None:
            nn.init.zeros_(self.cond.weight)

    def _homogeneous(self, h: torch.Tensor) -> torch.Tensor:
        b, c = h.shape[:2]
        g = upcast(h).reshape(b, self.groups, -1)  # statistics in float32 under bf16 autocast
        centred = g - g.mean(2, keepdim=True)
        var = centred.pow(2).mean(2, keepdim=True)
        spread = (var + self.eps * var.mean(1, keepdim=True)).sqrt().clamp_min(1e-30)
        return (centred * (spread.mean(1, keepdim=True) / spread)).reshape(h.shape)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if (h.shape[1] // self.groups) * h.shape[2] * h.shape[3] == 1:
            h = torch.zeros_like(h)  # one value per group normalises to 0 (torch refuses a batch of one)
        elif self.homogeneous:
            h = self._homogeneous(h)
        elif second_order.active():  # the closed-form double backward (cdn.nets.second_order)
            h = second_order.group_norm(upcast(h), self.groups, self.eps)
        else:
            h = F.group_norm(h, self.groups, None, None, self.eps)
        gain = self.weight.view(1, -1)
        if self.cond is not None:
            if emb is None:
                raise ValueError("this network is noise-conditioned: call it as net(y, sigma)")
            gain = gain * (1 + self.cond(emb.to(self.cond.weight.dtype)))
        return h * gain[:, :, None, None].to(h.dtype)


class BatchNormWrap(nn.BatchNorm2d):
    """BatchNorm2d that ignores the sigma embedding (baseline ResNet-18)."""

    def forward(self, h, emb=None):  # noqa: D401
        return super().forward(h)


NORMS = ("group", "group8", "layer", "homog", "batch")


def make_norm(kind: str, channels: int, noise_conditioning: bool) -> nn.Module:
    """``'group'``: shift-free GroupNorm with ``gcd(C, 32)`` groups (one channel per group, i.e.
    InstanceNorm, for C <= 32); ``'group8'``: the same with groups of 8 channels; ``'layer'``: one group
    (a shift-free LayerNorm over C, H, W); ``'homog'``: the scale-preserving variant with groups of 8
    channels; ``'batch'``: BatchNorm (the baseline)."""
    if kind == "group":
        return ScaleGroupNorm(channels, noise_conditioning)
    if kind == "group8":
        return ScaleGroupNorm(channels, noise_conditioning, channels_per_group=min(8, channels))
    if kind == "layer":
        return ScaleGroupNorm(channels, noise_conditioning, channels_per_group=channels)
    if kind == "homog":
        return ScaleGroupNorm(channels, noise_conditioning, homogeneous=True, channels_per_group=min(8, channels))
    if kind == "batch":
        if noise_conditioning:
            raise ValueError("noise_conditioning needs norm='group'")
        return BatchNormWrap(channels)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class GELU(nn.GELU):
    """Exact GELU, ``x Phi(x)``; inside ``second_order.second_order_layers()`` with the closed-form second
    derivative of ``cdn.nets.second_order``."""

    def forward(self, x):
        return second_order.gelu(x) if second_order.active() else super().forward(x)


def make_activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return GELU()
    if kind == "relu":
        return nn.ReLU()
    if kind == "softplus":
        return nn.Softplus()
    raise ValueError(f"activation must be 'gelu', 'relu' or 'softplus', got {kind!r}")


class BasicBlock(nn.Module):
    """``act(norm2(conv2(act(norm1(conv1(h))))) + shortcut(h))``, the ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act: str, bias: bool, cond: bool):
        super().__init__()
        self.conv1 = second_order.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.norm1 = make_norm(norm, cout, cond)
        self.conv2 = second_order.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.norm2 = make_norm(norm, cout, cond)
        self.act = make_activation(act)
        self.shortcut_conv = None
        if stride != 1 or cin != cout:
            self.shortcut_conv = second_order.Conv2d(cin, cout, 1, stride, bias=bias)
            self.shortcut_norm = make_norm(norm, cout, cond)

    def forward(self, h, emb=None):
        out = self.act(self.norm1(self.conv1(h), emb))
        out = self.norm2(self.conv2(out), emb)
        skip = h if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(h), emb)
        return self.act(out + skip)


class PreActBlock(nn.Module):
    """Pre-activation block ``h + conv2(act(norm2(conv1(act(norm1(h))))))`` with a linear (1x1 conv)
    shortcut when the shape changes. Normalisation stays inside the branch, so the residual stream
    keeps the scale of the input: a network of such blocks is not invariant to ``y -> a y`` (which
    would force ``<D(y) - y, y> = 0`` and cripple the denoiser)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act: str, bias: bool, cond: bool):
        super().__init__()
        self.norm1 = make_norm(norm, cin, cond)
        self.conv1 = second_order.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.norm2 = make_norm(norm, cout, cond)
        self.conv2 = second_order.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.act = make_activation(act)
        self.shortcut_conv = second_order.Conv2d(cin, cout, 1, stride, bias=bias) if stride != 1 or cin != cout else None

    def forward(self, h, emb=None):
        out = self.conv1(self.act(self.norm1(h, emb)))
        out = self.conv2(self.act(self.norm2(out, emb)))
        return out + (h if self.shortcut_conv is None else self.shortcut_conv(h))


class PostActBlock(nn.Module):
    """Post-activation block of the authors' group's later GradResNet (its public code):
    ``N(act(conv2(act(conv1(h)))) + shortcut(h))``, the norm after the residual sum, the shortcut
    ``N(conv1x1(h))`` where the shape changes. With the scale-preserving norm (``'homog'``), ReLU-like
    activations and bias-free convolutions the block is (nearly) homogeneous of degree 1."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act: str, bias: bool, cond: bool):
        super().__init__()
        self.conv1 = second_order.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.conv2 = second_order.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.act = make_activation(act)
        self.norm = make_norm(norm, cout, cond)
        self.shortcut_conv = None
        if stride != 1 or cin != cout:
            self.shortcut_conv = second_order.Conv2d(cin, cout, 1, stride, bias=bias)
            self.shortcut_norm = make_norm(norm, cout, cond)

    def forward(self, h, emb=None):
        out = self.act(self.conv2(self.act(self.conv1(h))))
        skip = h if self.shortcut_conv is None else self.shortcut_norm(self.shortcut_conv(h), emb)
        return self.norm(out + skip, emb)


BLOCKS = {"basic": BasicBlock, "preact": PreActBlock, "postact": PostActBlock}
SIDES = ("none", "sum", "concat")
HEADS = ("linear", "logenergy", "quadratic", "logquad", "stage1energy", "stagesenergy", "stage4energy")
#: the heads whose class-independent energy is computed from the network's own stage feature maps, and which maps
FEATURE_ENERGY_HEADS = {"stage1energy": slice(0, 1), "stagesenergy": slice(0, 4), "stage4energy": slice(3, 4)}


def full_precision(t: torch.Tensor):
    """A context in which autocast is off on ``t``'s device: what the score needs exactly (the input
    layer, the energy and the class head) runs in float32 inside a bf16-autocast step."""
    return torch.autocast(t.device.type, enabled=False)


class ResNet(nn.Module):
    """CIFAR ResNet-18 (four stages of two blocks, widths w-2w-4w-8w, 3x3 stride-1 stem) with one
    switch per design choice, so that every variant of chapter "GradResNet as a UNet" is this class:

    * ``block``: ``'basic'`` (ResNet-18: norm inside the branch, activation after the sum),
      ``'preact'`` (pre-activation, the stream kept un-normalised, each stage read out through its own
      norm + activation before pooling) or ``'postact'`` (norm after the residual sum, stem = conv +
      activation without norm, the later GradResNet of the authors' group);
    * ``norm`` ('batch' | 'group' = shift-free GroupNorm | 'homog' = scale-preserving GroupNorm),
      ``activation`` ('relu' | 'gelu' | 'softplus'), ``bias``;
    * ``side_connections``: ``'none'``; ``'sum'``, ``phi = p_4 + sum_s L_s p_s`` (each stage's pooled
      features ``p_s`` mapped linearly into the last stage's width); ``'concat'``,
      ``phi = [L_1 p_1, L_2 p_2, L_3 p_3, p_4]`` with ``L_s`` halving the width (``11.5 w`` features);
    * ``head``, the logits from the features ``phi = phi(y)`` (``d`` = number of pixel values):
      ``'linear'``     ``f_c = <w_c, phi>``;
      ``'logenergy'``  ``f_c = <w_c, phi> - (d/2) log mean(R(y)^2)``, ``R`` a bias-free 3x3 convolution;
      ``'quadratic'``  ``f_c = <w_c, phi> - s mean(phi^2) / 2``, ``s = exp(log_s)`` learned;
      ``'logquad'``    ``f_c = <w_c, phi> - (d/2) log mean(phi^2)``;
      ``'stage1energy'`` ``f_c = <w_c, phi> - (d/2) log mean(h_1(y)^2)``, ``h_1`` the first stage's output
      feature map (full resolution): the log-energy built from the classifier's own spatial features;
      ``'stagesenergy'`` ``f_c = <w_c, phi> - (d/2) (1/4) sum_s log mean(h_s(y)^2)`` over the four stages;
      ``'stage4energy'`` ``f_c = <w_c, phi> - (d/2) log mean(h_4(y)^2)``, ``h_4`` the last stage's map, the one
      the class read-out pools;
    * ``noise_conditioning``: the norm gains depend on ``log sigma``.

    ``True``/``False`` for ``side_connections`` mean ``'sum'``/``'none'``. Under bf16 autocast the stem,
    ``R`` and the head run in float32 (``full_precision``) unless ``score_in_float32=False``: the
    chapter measures why. Works on any image size >= 8x8."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, *,
                 norm: str = "batch", activation: str = "relu", bias: bool = True,
                 side_connections: bool | str = False, noise_conditioning: bool = False,
                 block: str = "basic", head: str = "linear", blocks_per_stage: int = 2,
                 score_in_float32: bool = True):
        super().__init__()
        if width < 1 or num_classes < 2 or in_channels < 1:
            raise ValueError(f"need width >= 1, num_classes >= 2, in_channels >= 1; got "
                             f"width={width}, num_classes={num_classes}, in_channels={in_channels}")
        side = {True: "sum", False: "none"}.get(side_connections, side_connections)
        for name, value, choices in (("block", block, tuple(BLOCKS)), ("side_connections", side, SIDES),
                                     ("head", head, HEADS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.noise_conditioning, self.block, self.side_kind, self.head = noise_conditioning, block, side, head
        self.score_in_float32 = score_in_float32
        #: EGC's variance-preserving input (``cdn.profiles.MODEL_SETTINGS["egc"]``): a noise-conditioned net sees
        #: ``y / sqrt(1 + sigma^2)``, the diffused image ``sqrt(abar) x + sqrt(1 - abar) eps`` of the VE image
        #: ``y = x + sigma eps`` with ``sigma^2 = (1 - abar) / abar``; set by ``cdn.train.make_net``
        self.input_scaling = False
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = second_order.Conv2d(in_channels, width, 3, 1, 1, bias=bias)
        self.stem_norm = make_norm(norm, width, noise_conditioning) if block == "basic" else None
        self.act = make_activation(activation)
        self.readout_norms = (nn.ModuleList([make_norm(norm, w, noise_conditioning) for w in widths])
                              if block == "preact" else None)
        stages, cin = [], width
        for i, cout in enumerate(widths):
            blocks = [BLOCKS[block](cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1,
                                    norm, activation, bias, noise_conditioning) for j in range(blocks_per_stage)]
            stages.append(nn.ModuleList(blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.side = None
        if side == "sum":
            self.side = nn.ModuleList([nn.Linear(w, widths[-1], bias=False) for w in widths[:-1]])
        elif side == "concat":
            self.side = nn.ModuleList([nn.Linear(w, max(1, w // 2), bias=False) for w in widths[:-1]])
        n_features = widths[-1] + (sum(max(1, w // 2) for w in widths[:-1]) if side == "concat" else 0)
        self.fc = nn.Linear(n_features, num_classes, bias=bias)
        self.energy_conv = second_order.Conv2d(in_channels, width, 3, 1, 1, bias=False) if head == "logenergy" else None
        self.log_s = nn.Parameter(torch.zeros(())) if head == "quadratic" else None

    def _fp32(self, t: torch.Tensor):
        return full_precision(t) if self.score_in_float32 else contextlib.nullcontext()

    def log_energy(self, y: torch.Tensor) -> torch.Tensor:
        """The noise-blind energy term ``-(d/2) log(mean(R(y)^2))`` with ``R`` a bias-free 3x3
        convolution and ``d`` the number of pixel values; shape (B,). Its gradient
        ``-d R^T R y / ||R y||^2`` is about ``-R^T R y / sigma^2`` when ``R`` passes mostly noise: the
        1/sigma^2 scale a noise-blind denoiser needs, which a classifier with a normalised,
        pooled read-out cannot reach in a short training (chapter "GradResNet as a UNet")."""
        with self._fp32(y):
            r = self.energy_conv(upcast(y) if self.score_in_float32 else y)
            return -0.5 * y[0].numel() * torch.log(upcast(r).pow(2).flatten(1).mean(1) + 1e-8)

    def features(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """The features ``phi(y)`` the head reads: the pooled last stage, plus (``'sum'``) or
        concatenated with (``'concat'``) the linear maps of the pooled earlier stages."""
        return self._features_and_maps(y, sigma)[0]

    def _features_and_maps(self, y: torch.Tensor, sigma: torch.Tensor | None = None):
        """``(phi(y), [h_1, ..., h_4])``: the features and each stage's output feature map."""
        if y.ndim != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected y of shape (B, {self.in_channels}, H, W), got {tuple(y.shape)}")
        if self.noise_conditioning and sigma is None:
            raise ValueError("this network is noise-conditioned: call it as net(y, sigma)")
        emb = sigma_embedding(sigma) if self.noise_conditioning else None
        if self.input_scaling:
            if sigma is None:
                raise ValueError("this network scales its input by 1 / sqrt(1 + sigma^2): call it as net(y, sigma)")
            y = y * torch.rsqrt(1 + sigma.to(y.dtype).view(-1, 1, 1, 1) ** 2)
        with self._fp32(y):
            h = self.stem(upcast(y) if self.score_in_float32 else y)
        if self.stem_norm is not None:
            h = self.act(self.stem_norm(h, emb))
        elif self.block == "postact":
            h = self.act(h)
        pooled, maps = [], []
        for s, stage in enumerate(self.stages):
            for block in stage:
                h = block(h, emb)
            maps.append(h)
            read = h if self.readout_norms is None else self.act(self.readout_norms[s](h, emb))
            pooled.append(read.mean(dim=(2, 3)))
        if self.side_kind == "sum":
            return pooled[-1] + sum(lin(p) for lin, p in zip(self.side, pooled[:-1])), maps
        if self.side_kind == "concat":
            return torch.cat([lin(p) for lin, p in zip(self.side, pooled[:-1])] + [pooled[-1]], dim=1), maps
        return pooled[-1], maps

    def logit_parts(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The logits as a sum of parts, ``f_c(y) = features_c(y) + energy(y)``: ``"features"`` (B, C), the
        linear read-out ``<w_c, phi(y)>`` of the deep features, and, for the heads that have one,
        ``"energy"`` (B,), the term shared by every class (it leaves ``p(c | y)`` unchanged and adds its
        own gradient to every score; ``cdn.joint.JointModel.score_parts``)."""
        phi, maps = self._features_and_maps(y, sigma)
        with self._fp32(phi):
            if self.score_in_float32:
                phi = upcast(phi)
            parts = {"features": self.fc(phi)}
        if self.head == "logenergy":
            parts["energy"] = self.log_energy(y)
        elif self.head in FEATURE_ENERGY_HEADS:
            used = maps[FEATURE_ENERGY_HEADS[self.head]]
            logs = [torch.log(upcast(h).pow(2).flatten(1).mean(1) + 1e-8) for h in used]
            parts["energy"] = -0.5 * y[0].numel() * sum(logs) / len(logs)
        elif self.head == "quadratic":
            parts["energy"] = -self.log_s.exp() * phi.pow(2).mean(1) / 2
        elif self.head == "logquad":
            parts["energy"] = -0.5 * y[0].numel() * torch.log(phi.pow(2).mean(1) + 1e-12)
        return parts

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        parts = self.logit_parts(y, sigma)
        logits = parts["features"]
        if "energy" in parts:  # the same for every class: p(c | y) is unchanged
            logits = logits + parts["energy"][:, None].to(logits.dtype)
        return logits


def ResNet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """The discriminative baseline: CIFAR ResNet-18 with BatchNorm, ReLU and biases."""
    return ResNet(num_classes, in_channels, width, norm="batch", activation="relu", bias=True)
