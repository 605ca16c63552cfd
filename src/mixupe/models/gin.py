"""A Graph Isomorphism Network (Xu et al. 2019) for graph classification, PyTorch Geometric.

Mixing for graphs happens on the pooled graph embedding: the submodule ``pool`` returns one
row per graph, and ``mix_layers == ("pool",)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixupe.errors import ConfigError, DataUnavailableError, InputError

__all__ = ["GIN", "GraphPool"]

PYG_INSTALL = "pip install torch_geometric"


class GraphPool(nn.Module):
    """Graph-level readout: ``(nodes, D)`` features and the node-to-graph index -> ``(G, D)``."""

    def __init__(self, readout: str = "sum") -> None:
        super().__init__()
        if readout not in ("sum", "mean", "max"):
            raise ConfigError(f"readout={readout!r} is not one of 'sum', 'mean', 'max'")
        self.readout = readout

    def forward(self, h: Tensor, batch: Tensor, num_graphs: int) -> Tensor:
        from torch_geometric.nn import global_add_pool, global_max_pool, global_mean_pool

        pool = {"sum": global_add_pool, "mean": global_mean_pool, "max": global_max_pool}
        return pool[self.readout](h, batch, size=num_graphs)


class GIN(nn.Module):
    """GINConv layers (MLP with BatchNorm, learnable eps), a readout ``pool`` over the
    concatenated outputs of every layer (as in the GIN paper), then an MLP head.

    Takes a PyG ``Batch`` (or a single ``Data``) and returns logits (num_graphs, K).

    Example:
        >>> import torch
        >>> from torch_geometric.data import Batch, Data
        >>> g = Data(x=torch.randn(4, 3), edge_index=torch.tensor([[0, 1, 2], [1, 2, 3]]))
        >>> net = GIN(in_features=3, num_classes=2, hidden=8, num_layers=2)
        >>> tuple(net(Batch.from_data_list([g, g])).shape), net.mix_layers
        ((2, 2), ('pool',))
    """

    def __init__(
        self,
        *,
        in_features: int,
        num_classes: int,
        hidden: int = 64,
        num_layers: int = 3,
        readout: str = "sum",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        try:
            from torch_geometric.nn import GINConv
        except ImportError as exc:
            raise DataUnavailableError(
                f"the GIN model needs PyTorch Geometric; install it with `{PYG_INSTALL}`"
            ) from exc
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ConfigError(f"num_layers={num_layers!r} must be a positive integer, e.g. 3")
        if not isinstance(hidden, int) or hidden < 1:
            raise ConfigError(f"hidden={hidden!r} must be a positive integer, e.g. 64")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout={dropout!r} must lie in [0, 1), e.g. 0.5")
        self.in_features = in_features
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for _ in range(num_layers):
            mlp = nn.Sequential(
                nn.Linear(width, hidden),
                nn.BatchNorm1d(hidden),
                nn.ReLU(),
                nn.Linear(hidden, hidden),
            )
            self.convs.append(GINConv(mlp, train_eps=True))
            self.norms.append(nn.BatchNorm1d(hidden))
            width = hidden
        self.pool = GraphPool(readout)
        self.head = nn.Sequential(
            nn.Linear(hidden * num_layers, hidden),
            nn.ReLU(),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            nn.Linear(hidden, num_classes),
        )
        self.mix_layers: tuple[str, ...] = ("pool",)

    def forward(self, data: Any) -> Tensor:
        x, edge_index = getattr(data, "x", None), getattr(data, "edge_index", None)
        if not isinstance(x, Tensor) or not isinstance(edge_index, Tensor):
            raise InputError(
                f"GIN takes a PyG Batch or Data with x and edge_index, got {type(data).__name__}; "
                "use mixupe.data.batches on a graph split"
            )
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise InputError(
                f"GIN expects node features (nodes, {self.in_features}), got {tuple(x.shape)}; "
                "build the model with input_shape=ds.input_shape"
            )
        batch = getattr(data, "batch", None)
        if batch is None:
            batch = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
        num_graphs = int(getattr(data, "num_graphs", 1) or 1)
        h = x
        per_layer = []
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(norm(conv(h, edge_index)))
            per_layer.append(h)
        pooled = self.pool(torch.cat(per_layer, dim=1), batch, num_graphs)
        return self.head(pooled)
