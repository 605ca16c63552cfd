"""A small CNN for MFCC inputs (1 x coefficients x frames), e.g. spoken digits."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mixupe.errors import ConfigError
from mixupe.models.cnn import check_image_input

__all__ = ["MFCCCNN"]


class MFCCCNN(nn.Module):
    """Three conv blocks over (coefficient, time); the first pools time only, as 13 MFCCs are few.

    Blocks ``block1``, ``block2`` are the default Manifold Mixup targets; ``block3`` is
    followed by global average pooling and a linear head.

    Example:
        >>> import torch
        >>> net = MFCCCNN(num_classes=10, channels=(8, 16, 16))
        >>> tuple(net(torch.randn(3, 1, 13, 40)).shape)
        (3, 10)
    """

    def __init__(
        self,
        *,
        num_classes: int,
        in_channels: int = 1,
        channels: Sequence[int] = (32, 64, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if len(channels) != 3 or any(not isinstance(c, int) or c < 1 for c in channels):
            raise ConfigError(
                f"channels={tuple(channels)!r} must be three positive integers, e.g. (32, 64, 64)"
            )
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.1")
        self.in_channels = in_channels
        c1, c2, c3 = channels

        def block(cin: int, cout: int, pool: tuple[int, int] | None) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]
            if pool is not None:
                layers.append(nn.MaxPool2d(pool, ceil_mode=True))
            return nn.Sequential(*layers)

        self.block1 = block(in_channels, c1, (1, 2))
        self.block2 = block(c1, c2, (2, 2))
        self.block3 = block(c2, c3, None)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(c3, num_classes)
        self.mix_layers: tuple[str, ...] = ("block1", "block2")

    def forward(self, x: Tensor) -> Tensor:
        check_image_input(self, x, self.in_channels)
        h = self.block3(self.block2(self.block1(x)))
        return self.head(self.dropout(self.pool(h).flatten(1)))
