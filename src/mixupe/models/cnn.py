"""A small convolutional network for images of any size (e.g. 1x28x28 or 1x8x8), and spectrograms.

With several convolutions per block it is a small VGG: the ``small-vgg`` model of the registry
is VGG-11's pattern (1, 1, 2, 2 convolutions with 32, 64, 128, 128 filters, a quarter of
VGG-11's width without its last stage). The speech experiments of mixup (Zhang et al. 2018) and
the MixupE authors' speech code train VGG and LeNet models on Speech Commands spectrograms.
"""

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
    """Blocks of ``convs[i]`` x (3x3 conv -> [BatchNorm] -> ReLU) -> 2x2 max-pool, then global
    average pooling and a linear head.

    Blocks are named ``block1``, ``block2``, ...; all are Manifold Mixup targets. ``convs``
    (default: one per block) gives the convolutions of each block. Pooling is skipped once the
    feature map is smaller than 2x2, so tiny images work.

    Example:
        >>> import torch
        >>> net = SmallCNN(in_channels=1, num_classes=10, channels=(8, 16))
        >>> tuple(net(torch.randn(2, 1, 28, 28)).shape), net.mix_layers
        ((2, 10), ('block1', 'block2'))
        >>> vgg = SmallCNN(in_channels=1, num_classes=12, channels=(8, 16), convs=(1, 2))
        >>> tuple(vgg(torch.randn(2, 1, 40, 101)).shape)
        (2, 12)
    """

    def __init__(
        self,
        *,
        in_channels: int,
        num_classes: int,
        channels: Sequence[int] = (32, 64),
        convs: Sequence[int] | None = None,
        batch_norm: bool = True,
        dropout: float = 0.0,
        image_size: tuple[int, int] = (28, 28),
    ) -> None:
        super().__init__()
        if not channels or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"channels={tuple(channels)!r} must be positive integers, e.g. (32, 64)"
            )
        convs = (1,) * len(channels) if convs is None else tuple(convs)
        if len(convs) != len(channels) or any(not isinstance(c, int) or c < 1 for c in convs):
            raise ConfigError(
                f"convs={convs!r} must give a positive number of convolutions per block, one "
                f"per entry of channels={tuple(channels)!r}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.1")
        self.in_channels = in_channels
        width, (h, w) = in_channels, image_size
        names = []
        for i, (out, n) in enumerate(zip(channels, convs, strict=True), start=1):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers.append(nn.Conv2d(width, out, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(nn.ReLU())
                width = out
            if h >= 2 and w >= 2:
                layers.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
            self.add_module(f"block{i}", nn.Sequential(*layers))
            names.append(f"block{i}")
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
