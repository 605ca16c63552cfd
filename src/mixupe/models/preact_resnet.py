"""Pre-activation ResNet-18 (He et al. 2016) with configurable width and input channels."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mixupe.errors import ConfigError
from mixupe.models.cnn import check_image_input

__all__ = ["PreActBlock", "PreActResNet18"]


class PreActBlock(nn.Module):
    """BN -> ReLU -> conv3x3 -> BN -> ReLU -> conv3x3, plus a (1x1 conv) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18: a 3x3 stem, four stages of two blocks (widths w, 2w, 4w, 8w).

    ``width=64`` is the usual CIFAR network; the default 16 trains on a few CPU cores.
    Stages are named ``layer1`` ... ``layer4``; Manifold Mixup targets ``layer1`` and
    ``layer2`` by default (with ``"input"`` these are the layers of Verma et al. 2019).

    Example:
        >>> import torch
        >>> net = PreActResNet18(in_channels=1, num_classes=10, width=8)
        >>> tuple(net(torch.randn(2, 1, 28, 28)).shape)
        (2, 10)
    """

    def __init__(self, *, in_channels: int = 3, num_classes: int, width: int = 16) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ConfigError(
                f"width={width!r} must be a positive integer, e.g. 16 (64 is the standard)"
            )
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        planes = width
        in_planes = width
        for i, stride in enumerate((1, 2, 2, 2), start=1):
            stage = nn.Sequential(
                PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)
            )
            self.add_module(f"layer{i}", stage)
            in_planes = planes
            planes *= 2
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)
        self.mix_layers: tuple[str, ...] = ("layer1", "layer2")

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(self, x, self.in_channels)
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
