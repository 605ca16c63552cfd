"""A small convolutional network for images of any size (e.g. 1x28x28 or 1x8x8)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mixupe.errors import ConfigError, InputError

__all__ = ["SmallCNN", "check_image_input"]


def check_image_input(model: nn.Module, x: Tensor, in_channels: int) -> None:
    """Raise InputError unless ``x`` is (B, in_channels, H, W)."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise InputError(
            f"{type(model).__name__} expects (B, {in_channels}, H, W) inputs, got shape "
            f"{tuple(x.shape)}; build the model with input_shape=ds.input_shape"
        )


class SmallCNN(nn.Module):
    """Blocks of 3x3 conv -> [BatchNorm] -> ReLU -> 2x2 max-pool, global average pool, linear head.

    Blocks are named ``block1``, ``block2``, ...; all are Manifold Mixup targets. Pooling is
    skipped once the feature map is smaller than 2x2, so tiny images work.

    Example:
        >>> import torch
        >>> net = SmallCNN(in_channels=1, num_classes=10, channels=(8, 16))
        >>> tuple(net(torch.randn(2, 1, 28, 28)).shape), net.mix_layers
        ((2, 10), ('block1', 'block2'))
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        batch_norm: bool = True,
        dropout: float = 0.0,
        image_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"channels={tuple(channels)!r} must be positive integers, e.g. (32, 64)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.1")
        self.in_channels = in_channels
        width, (h, w) = in_channels, image_size
        names = []
        for i, out in enumerate(channels, start=1):
            layers: list[nn.Module] = [
                nn.Conv2d(width, out, 3, padding=1, bias=not batch_norm)
            ]
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            self.add_module(f"block{i}", nn.Sequential(*layers))
            names.append(f"block{i}")
            width = out
        self._blocks = tuple(names)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.mix_layers: tuple[str, ...] = tuple(names)

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(self, x, self.in_channels)
        h = x
        for name in self._blocks:
            h = getattr(self, name)(h)
        return self.head(self.dropout(self.pool(h).flatten(1)))
