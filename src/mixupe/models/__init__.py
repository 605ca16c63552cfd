"""Models returning logits, with named submodules that Manifold Mixup can target.

Every model has ``mix_layers``: the submodule names (as in ``named_modules()``) that
``ManifoldMixup`` uses by default (``("pool",)`` for the GIN: graphs mix the pooled embedding).

Example:
    >>> import torch, mixupe.models
    >>> net = mixupe.models.build("small-cnn", input_shape=(1, 8, 8), num_classes=10)
    >>> tuple(net(torch.randn(2, 1, 8, 8)).shape)
    (2, 10)
"""

from __future__ import annotations

from mixupe.models.cnn import SmallCNN
from mixupe.models.gin import GIN, GraphPool
from mixupe.models.mfcc_cnn import MFCCCNN
from mixupe.models.mlp import MLP
from mixupe.models.preact_resnet import PreActResNet18
from mixupe.models.registry import build, names

__all__ = ["GIN", "MFCCCNN", "MLP", "GraphPool", "PreActResNet18", "SmallCNN", "build", "names"]
