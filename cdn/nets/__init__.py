"""Networks: ``GradResNet`` (the paper's, in the variants of ``gradresnet.VARIANTS``), ``ResNet18``
(discriminative baseline), ``UNet`` and ``DnCNN`` (bias-free denoise-only baselines), and ``build_net``
that makes any of them by name."""
from __future__ import annotations

from torch import nn

from .gradresnet import DEFAULT_VARIANT, VARIANTS, GradResNet
from .dncnn import DnCNN
from .resnet import ResNet, ResNet18
from .unet import UNet

__all__ = ["GradResNet", "ResNet", "ResNet18", "UNet", "DnCNN", "build_net", "ARCHITECTURES", "VARIANTS", "DEFAULT_VARIANT"]

ARCHITECTURES = (*VARIANTS, "resnet18", "unet", "dncnn")


def build_net(arch: str, num_classes: int, in_channels: int, width: int,
              noise_conditioning: bool = False) -> nn.Module:
    """Make a network by name: a GradResNet variant of ``VARIANTS`` (formulas in ``cdn.nets.resnet.ResNet``),
    ``resnet18``, ``unet`` or ``dncnn`` (17 layers of ``width`` channels); one of ``ARCHITECTURES``."""
    if arch in VARIANTS:
        return GradResNet(num_classes, in_channels, width, noise_conditioning, variant=arch)
    if arch == "resnet18":
        return ResNet18(num_classes, in_channels, width)
    if arch == "unet":
        return UNet(in_channels, width)
    if arch == "dncnn":
        return DnCNN(in_channels, width)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
