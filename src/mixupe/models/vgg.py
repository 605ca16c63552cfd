"""A small VGG for spectrograms (1 x bands x frames) and other image-like inputs.

The speech experiments of mixup (Zhang et al. 2018) and the MixupE authors' speech code train
VGG and LeNet models on Speech Commands spectrograms; this is a narrow VGG-11-like stack sized
for CPUs.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mixupe.errors import ConfigError
from mixupe.models.cnn import check_image_input

__all__ = ["SmallVGG"]


class SmallVGG(nn.Module):
    """Stages of ``convs[i]`` 3x3 conv -> BatchNorm -> ReLU layers with ``channels[i]`` filters,
    each stage followed by 2x2 max-pooling (skipped once the map is smaller than 2x2), then
    global average pooling, dropout and a linear head.

    Stages are named ``stage1``, ``stage2``, ...; all are Manifold Mixup targets. The default
    (32, 64, 128, 128) with (1, 1, 2, 2) convolutions is VGG-11's pattern at a quarter width
    without its last stage.

    Example:
        >>> import torch
        >>> net = SmallVGG(in_channels=1, num_classes=12, channels=(8, 16), convs=(1, 2))
        >>> tuple(net(torch.randn(2, 1, 40, 101)).shape), net.mix_layers
        ((2, 12), ('stage1', 'stage2'))
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64, 128, 128),
        convs: Sequence[int] = (1, 1, 2, 2),
        dropout: float = 0.2,
        image_size: tuple[int, int] = (40, 101),
    ) -> None:
        super().__init__()
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"channels={tuple(channels)!r} must be positive integers, e.g. (32, 64, 128, 128)"
            )
        if len(convs) != len(channels) or any(not isinstance(c, int) or c < 1 for c in convs):
            raise ConfigError(
                f"convs={tuple(convs)!r} must give a positive number of convolutions per stage, "
                f"one per entry of channels={tuple(channels)!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.2")
        self.in_channels = in_channels
        width, (h, w) = in_channels, image_size
        names = []
        for i, (out, n) in enumerate(zip(channels, convs, strict=True), start=1):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(width, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                           nn.ReLU()]
                width = out
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            self.add_module(f"stage{i}", nn.Sequential(*layers))
            names.append(f"stage{i}")
        self._stages = tuple(names)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.mix_layers: tuple[str, ...] = tuple(names)

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(self, x, self.in_channels)
        h = x
        for name in self._stages:
            h = getattr(self, name)(h)
        return self.head(self.dropout(self.pool(h).flatten(1)))
