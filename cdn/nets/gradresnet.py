"""GradResNet: a ResNet-18 whose input gradient is a good denoiser (PAPER.md, chapter
"GradResNet as a UNet"). GELU instead of ReLU, GroupNorm without additive shift instead of
BatchNorm, no bias parameters anywhere, side connections from every stage into the final
features, noise-blind unless ``noise_conditioning=True``."""
from __future__ import annotations

from .resnet import ResNet


class GradResNet(ResNet):
    """``GradResNet(num_classes, in_channels=3, width=64, noise_conditioning=False)``.

    The ablation switches (``activation``, ``norm``, ``side_connections``) default to the paper's
    choices; change them only to measure what each choice is worth."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: int = 64,
                 noise_conditioning: bool = False, *, activation: str = "gelu", norm: str = "group",
                 side_connections: bool = True):
        super().__init__(num_classes, in_channels, width, norm=norm, activation=activation, bias=False,
                         side_connections=side_connections, noise_conditioning=noise_conditioning)
