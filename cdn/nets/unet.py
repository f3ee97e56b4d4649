"""The denoise-only baseline: a bias-free UNet trained with MSE (Mohan et al., 2020, "bias-free
CNNs"), chapter "Denoising". ``forward(y) = D(y)``, predicted as ``y`` minus a residual.

It has no normalisation layer: a per-image normalisation (GroupNorm) would make the residual
invariant to ``y -> a y``; without it the network is exactly homogeneous, ``D(a y) = a D(y)`` for
``a > 0`` (convolutions without bias, ReLU, average pooling), as a bias-free denoiser should be."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConvBlock(nn.Module):
    """Two (conv 3x3 without bias, ReLU) layers."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)

    def forward(self, h):
        return F.relu(self.c2(F.relu(self.c1(h))))


class UNet(nn.Module):
    """Bias-free UNet with ``depth`` down/up levels and widths ``width * 2**k``; homogeneous,
    ``D(a y) = a D(y)`` for ``a > 0``. Input sizes must be divisible by ``2**depth``."""

    is_denoiser = True
    noise_conditioning = False

    def __init__(self, in_channels: int = 3, width: int = 32, depth: int = 2):
        super().__init__()
        if width < 1 or depth < 1:
            raise ValueError(f"need width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.in_channels, self.width, self.depth = in_channels, width, depth
        widths = [width * 2 ** k for k in range(depth + 1)]
        self.inc = _ConvBlock(in_channels, widths[0])
        self.down = nn.ModuleList([_ConvBlock(widths[k], widths[k + 1]) for k in range(depth)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k + 1], widths[k], 2, 2, bias=False)
                                 for k in reversed(range(depth))])
        self.dec = nn.ModuleList([_ConvBlock(2 * widths[k], widths[k]) for k in reversed(range(depth))])
        self.out = nn.Conv2d(widths[0], in_channels, 1, bias=False)

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected y of shape (B, {self.in_channels}, H, W), got {tuple(y.shape)}")
        if y.shape[2] % 2 ** self.depth or y.shape[3] % 2 ** self.depth:
            raise ValueError(f"image height and width must be divisible by {2 ** self.depth}, got {tuple(y.shape[2:])}")
        skips, h = [], self.inc(y)
        for block in self.down:
            skips.append(h)
            h = block(F.avg_pool2d(h, 2))
        for up, dec in zip(self.up, self.dec):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        return y - self.out(h)
