"""Networks: ``GradResNet`` (the paper's), ``ResNet18`` (discriminative baseline), ``UNet``
(bias-free denoise-only baseline), and ``build_net`` that makes any of them by name."""
from __future__ import annotations

from torch import nn

from .gradresnet import GradResNet
from .resnet import ResNet, ResNet18
from .unet import UNet

__all__ = ["GradResNet", "ResNet", "ResNet18", "UNet", "build_net", "ARCHITECTURES"]

ARCHITECTURES = ("gradresnet", "resnet18", "unet", "gradresnet-relu", "gradresnet-batchnorm",
                 "gradresnet-noside", "gradresnet-nologenergy")


def build_net(arch: str, num_classes: int, in_channels: int, width: int,
              noise_conditioning: bool = False) -> nn.Module:
    """Make a network by name: one of ``ARCHITECTURES`` (the last three are GradResNet ablations)."""
    if arch == "gradresnet":
        return GradResNet(num_classes, in_channels, width, noise_conditioning)
    if arch == "gradresnet-relu":
        return GradResNet(num_classes, in_channels, width, noise_conditioning, activation="relu")
    if arch == "gradresnet-batchnorm":
        return GradResNet(num_classes, in_channels, width, False, norm="batch")
    if arch == "gradresnet-noside":
        return GradResNet(num_classes, in_channels, width, noise_conditioning, side_connections=False)
    if arch == "gradresnet-nologenergy":
        return GradResNet(num_classes, in_channels, width, noise_conditioning, log_energy=False)
    if arch == "resnet18":
        return ResNet18(num_classes, in_channels, width)
    if arch == "unet":
        return UNet(in_channels, width)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")
