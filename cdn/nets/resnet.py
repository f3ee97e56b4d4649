"""A configurable CIFAR ResNet-18 (3x3 stem, stride 1, four stages of two basic blocks, widths
w-2w-4w-8w) from which both the discriminative baseline ``ResNet18`` (BatchNorm, ReLU, biases) and
the paper's ``GradResNet`` (GELU, shift-free GroupNorm, no bias, side connections) are built, so that
ablations differ in one switch (chapters "Classification" and "GradResNet as a UNet").
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..joint import upcast
from torch import nn

SIGMA_EMBED_DIM = 16


def sigma_embedding(sigma: torch.Tensor, dim: int = SIGMA_EMBED_DIM) -> torch.Tensor:
    """Fourier features of ``log sigma``: ``[sin(k log s), cos(k log s)]`` for k in a geometric range,
    with sigma clamped below at 1e-4 (so sigma = 0 is allowed). Shape (B, dim)."""
    log_s = torch.log(sigma.float().clamp_min(1e-4)).view(-1, 1)
    freqs = torch.logspace(-1.5, 0.5, dim // 2, device=sigma.device).view(1, -1)
    return torch.cat([torch.sin(freqs * log_s), torch.cos(freqs * log_s)], dim=1)


def group_count(channels: int, max_groups: int = 32) -> int:
    """Number of GroupNorm groups: gcd(channels, max_groups)."""
    return math.gcd(channels, max_groups)


class ScaleGroupNorm(nn.Module):
    """GroupNorm with a multiplicative gain and no additive shift:
    ``GN(h) = gain * (h - mean_g) / sqrt(var_g + eps)``. With noise conditioning the gain is
    ``weight * (1 + A e(sigma))`` for a bias-free linear map ``A`` (zero-initialised) of the sigma
    embedding ``e``."""

    def __init__(self, channels: int, noise_conditioning: bool = False, eps: float = 1e-5):
        super().__init__()
        self.groups = group_count(channels)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.cond = nn.Linear(SIGMA_EMBED_DIM, channels, bias=False) if noise_conditioning else None
        if self.cond is not None:
            nn.init.zeros_(self.cond.weight)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        if (h.shape[1] // self.groups) * h.shape[2] * h.shape[3] == 1:
            h = torch.zeros_like(h)  # one value per group normalises to 0 (torch refuses a batch of one)
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


def make_norm(kind: str, channels: int, noise_conditioning: bool) -> nn.Module:
    if kind == "group":
        return ScaleGroupNorm(channels, noise_conditioning)
    if kind == "batch":
        if noise_conditioning:
            raise ValueError("noise_conditioning needs norm='group'")
        return BatchNormWrap(channels)
    raise ValueError(f"norm must be 'group' or 'batch', got {kind!r}")


def make_activation(kind: str) -> nn.Module:
    if kind == "gelu":
        return nn.GELU()
    if kind == "relu":
        return nn.ReLU()
    if kind == "softplus":
        return nn.Softplus()
    raise ValueError(f"activation must be 'gelu', 'relu' or 'softplus', got {kind!r}")


class BasicBlock(nn.Module):
    """``act(norm2(conv2(act(norm1(conv1(h))))) + shortcut(h))``, the ResNet basic block."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str, act: str, bias: bool, cond: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.norm1 = make_norm(norm, cout, cond)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.norm2 = make_norm(norm, cout, cond)
        self.act = make_activation(act)
        self.shortcut_conv = None
        if stride != 1 or cin != cout:
            self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, bias=bias)
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
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=bias)
        self.norm2 = make_norm(norm, cout, cond)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=bias)
        self.act = make_activation(act)
        self.shortcut_conv = nn.Conv2d(cin, cout, 1, stride, bias=bias) if stride != 1 or cin != cout else None

    def forward(self, h, emb=None):
        out = self.conv1(self.act(self.norm1(h, emb)))
        out = self.conv2(self.act(self.norm2(out, emb)))
        return out + (h if self.shortcut_conv is None else self.shortcut_conv(h))


class ResNet(nn.Module):
    """CIFAR ResNet-18 with switches: ``preact`` (pre-activation blocks, He et al. 2016, with
    the stream kept un-normalised), ``norm`` ('batch' | 'group' = shift-free GroupNorm),
    ``activation`` ('relu' | 'gelu' | 'softplus'), ``bias``, ``side_connections`` (each stage's
    globally averaged features mapped linearly into the final features), ``noise_conditioning``
    (the GroupNorm gains depend on log sigma). Works on any image size >= 8x8."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64, *,
                 norm: str = "batch", activation: str = "relu", bias: bool = True,
                 side_connections: bool = False, noise_conditioning: bool = False,
                 preact: bool = False, log_energy: bool = False, blocks_per_stage: int = 2):
        super().__init__()
        if width < 1 or num_classes < 2 or in_channels < 1:
            raise ValueError(f"need width >= 1, num_classes >= 2, in_channels >= 1; got "
                             f"width={width}, num_classes={num_classes}, in_channels={in_channels}")
        self.num_classes, self.in_channels, self.width = num_classes, in_channels, width
        self.noise_conditioning = noise_conditioning
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.preact = preact
        self.stem = nn.Conv2d(in_channels, width, 3, 1, 1, bias=bias)
        self.stem_norm = None if preact else make_norm(norm, width, noise_conditioning)
        self.act = make_activation(activation)
        block_type = PreActBlock if preact else BasicBlock
        # pre-activation: each stage is read out through its own norm + activation before pooling
        self.readout_norms = (nn.ModuleList([make_norm(norm, w, noise_conditioning) for w in widths])
                              if preact else None)
        stages, cin = [], width
        for i, cout in enumerate(widths):
            blocks = [block_type(cin if j == 0 else cout, cout, (1 if i == 0 else 2) if j == 0 else 1,
                                 norm, activation, bias, noise_conditioning) for j in range(blocks_per_stage)]
            stages.append(nn.ModuleList(blocks))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.side = (nn.ModuleList([nn.Linear(w, widths[-1], bias=False) for w in widths[:-1]])
                     if side_connections else None)
        self.fc = nn.Linear(widths[-1], num_classes, bias=bias)
        self.energy_conv = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False) if log_energy else None

    def log_energy(self, y: torch.Tensor) -> torch.Tensor:
        """The noise-blind energy term ``-(d/2) log(mean(R(y)^2))`` with ``R`` a bias-free 3x3
        convolution and ``d`` the number of pixel values; shape (B,). Its gradient
        ``-d R^T R y / ||R y||^2`` is about ``-R^T R y / sigma^2`` when ``R`` passes mostly noise: the
        1/sigma^2 scale a noise-blind denoiser needs, which a classifier with a normalised,
        pooled read-out cannot reach in a short training (chapter "GradResNet as a UNet")."""
        r = self.energy_conv(y)
        return -0.5 * y[0].numel() * torch.log(upcast(r).pow(2).flatten(1).mean(1) + 1e-8)

    def features(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Final features (B, 8w): pooled last stage plus, with side connections, the linear maps of
        the pooled earlier stages."""
        if y.ndim != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected y of shape (B, {self.in_channels}, H, W), got {tuple(y.shape)}")
        if self.noise_conditioning and sigma is None:
            raise ValueError("this network is noise-conditioned: call it as net(y, sigma)")
        emb = sigma_embedding(sigma) if self.noise_conditioning else None
        h = self.stem(y)
        if self.stem_norm is not None:
            h = self.act(self.stem_norm(h, emb))
        pooled = []
        for s, stage in enumerate(self.stages):
            for block in stage:
                h = block(h, emb)
            read = h if self.readout_norms is None else self.act(self.readout_norms[s](h, emb))
            pooled.append(read.mean(dim=(2, 3)))
        feats = pooled[-1]
        if self.side is not None:
            for lin, p in zip(self.side, pooled[:-1]):
                feats = feats + lin(p)
        return feats

    def forward(self, y: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.fc(self.features(y, sigma))
        if self.energy_conv is not None:  # the same for every class: p(c | y) is unchanged
            logits = logits + self.log_energy(y)[:, None].to(logits.dtype)
        return logits


def ResNet18(num_classes: int = 10, in_channels: int = 3, width: int = 64) -> ResNet:
    """The discriminative baseline: CIFAR ResNet-18 with BatchNorm, ReLU and biases."""
    return ResNet(num_classes, in_channels, width, norm="batch", activation="relu", bias=True)
