"""DnCNN (Zhang et al., 2017), bias-free as in Mohan et al. (2020): the reference denoiser of the paper's
referees, chapter "Denoising". ``forward(y) = D(y) = y - R(y)``, ``R`` a stack of ``depth`` 3x3 convolutions
without bias, with ReLU and a bias-free batch normalisation between them.

The bias-free batch normalisation divides each channel by its standard deviation over the batch (in
training; by the running one in evaluation) and multiplies it by a learned gain: no mean is subtracted
from the output and no shift is added (Mohan et al.'s ``BF_batchNorm``). In evaluation the network is then
exactly homogeneous, ``D(a y) = a D(y)`` for ``a > 0``, like the bias-free UNet."""
from __future__ import annotations

import torch
from torch import nn


class BiasFreeBatchNorm(nn.Module):
    """``h * gain / sd``, ``sd`` the per-channel standard deviation of the batch (training, kept as a running
    average with ``momentum``) or its running average (evaluation)."""

    def __init__(self, channels: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(channels))
        self.register_buffer("running_sd", torch.ones(channels))
        self.momentum, self.eps = momentum, eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.training:
            sd = (h.float().var(dim=(0, 2, 3)) + self.eps).sqrt()
            with torch.no_grad():
                self.running_sd.lerp_(sd.detach().to(self.running_sd.dtype), self.momentum)
        else:
            sd = self.running_sd
        return h * (self.gain / sd).to(h.dtype)[None, :, None, None]


class DnCNN(nn.Module):
    """Bias-free DnCNN: conv + ReLU, ``depth - 2`` x (conv + bias-free BN + ReLU), conv to the residual (initialised
    at zero, so that ``D(y) = y`` at the start); ``width`` channels (64 in the original, 17 layers)."""

    is_denoiser = True
    noise_conditioning = False

    def __init__(self, in_channels: int = 3, width: int = 64, depth: int = 17):
        super().__init__()
        if width < 1 or depth < 3:
            raise ValueError(f"need width >= 1 and depth >= 3, got width={width}, depth={depth}")
        self.in_channels = in_channels
        layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.ReLU()]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(width, width, 3, 1, 1, bias=False), BiasFreeBatchNorm(width), nn.ReLU()]
        layers.append(nn.Conv2d(width, in_channels, 3, 1, 1, bias=False))
        # D = identity at the start: with PyTorch's default initialisation the first steps shrink a residual of
        # the size of the image by killing the last layer's ReLUs, which no bias or centring can revive (measured
        # by cdn.experiments.dncnn_init.init_probe, chapter "What the referees asked")
        nn.init.zeros_(layers[-1].weight)
        self.residual = nn.Sequential(*layers)

    def forward(self, y: torch.Tensor, sigma=None) -> torch.Tensor:
        if y.ndim != 4 or y.shape[1] != self.in_channels:
            raise ValueError(f"expected y of shape (B, {self.in_channels}, H, W), got {tuple(y.shape)}")
        return y - self.residual(y)
