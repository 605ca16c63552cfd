"""A multi-layer perceptron for tables (optional BatchNorm and dropout)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mixupe.errors import ConfigError, InputError

__all__ = ["MLP"]


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] blocks, then a linear head returning logits.

    Inputs (B, ...) are flattened, so any sample shape with ``in_features`` values works.
    Manifold Mixup targets the hidden blocks ``blocks.0``, ``blocks.1``, ... (``mix_layers``).

    Example:
        >>> import torch
        >>> net = MLP(in_features=4, num_classes=3, hidden=(8, 8), batch_norm=True)
        >>> tuple(net(torch.randn(5, 4)).shape), net.mix_layers
        ((5, 3), ('blocks.0', 'blocks.1'))
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        hidden: Sequence[int] = (256, 256),
        batch_norm: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.1")
        if any(not isinstance(h, int) or h < 1 for h in hidden):
            raise ConfigError(
                f"hidden={tuple(hidden)!r} must be positive integers, e.g. (256, 256)"
            )
        self.in_features = in_features
        blocks = []
        width = in_features
        for size in hidden:
            layers: list[nn.Module] = [nn.Linear(width, size)]
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            blocks.append(nn.Sequential(*layers))
            width = size
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(width, num_classes)
        self.mix_layers: tuple[str, ...] = tuple(f"blocks.{i}" for i in range(len(blocks)))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x[0].numel() != self.in_features:
            raise InputError(
                f"MLP expects (B, {self.in_features}) inputs (or any (B, ...) with "
                f"{self.in_features} values per sample), got shape {tuple(x.shape)}; build the "
                "model with input_shape=ds.input_shape"
            )
        h = x.flatten(1)
        for block in self.blocks:
            h = block(h)
        return self.head(h)
