"""The model registry: ``names()`` and ``build(name, input_shape=..., num_classes=...)``."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from mixupe.errors import ConfigError
from mixupe.models.cnn import SmallCNN
from mixupe.models.gin import GIN
from mixupe.models.mfcc_cnn import MFCCCNN
from mixupe.models.mlp import MLP
from mixupe.models.preact_resnet import PreActResNet18

__all__ = ["build", "names"]


def _image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ConfigError(
            f"model {name!r} needs image inputs (C, H, W), got input_shape={input_shape}; "
            "use 'mlp' for tables and 'gin' for graphs"
        )
    c, h, w = input_shape
    return c, h, w


def _mlp(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    return MLP(in_features=math.prod(input_shape), num_classes=num_classes, **kw)


def _small_cnn(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    c, h, w = _image_shape("small-cnn", input_shape)
    return SmallCNN(in_channels=c, num_classes=num_classes, image_size=(h, w), **kw)


# VGG-11's pattern at a quarter width without its last stage; every default can be overridden.
SMALL_VGG = {"channels": (32, 64, 128, 128), "convs": (1, 1, 2, 2), "dropout": 0.2}


def _small_vgg(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    c, h, w = _image_shape("small-vgg", input_shape)
    return SmallCNN(in_channels=c, num_classes=num_classes, image_size=(h, w),
                    **{**SMALL_VGG, **kw})


def _preact(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    c, _, _ = _image_shape("preact-resnet18", input_shape)
    return PreActResNet18(in_channels=c, num_classes=num_classes, **kw)


def _mfcc(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    c, _, _ = _image_shape("mfcc-cnn", input_shape)
    return MFCCCNN(in_channels=c, num_classes=num_classes, **kw)


def _gin(input_shape: tuple[int, ...], num_classes: int, **kw: Any) -> nn.Module:
    if len(input_shape) != 1:
        raise ConfigError(
            f"model 'gin' needs input_shape=(num_node_features,), got {input_shape}; "
            "load a graph dataset (domain 'graphs')"
        )
    return GIN(in_features=input_shape[0], num_classes=num_classes, **kw)


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], type[nn.Module]]] = {
    "mlp": (_mlp, MLP),
    "small-cnn": (_small_cnn, SmallCNN),
    "small-vgg": (_small_vgg, SmallCNN),
    "preact-resnet18": (_preact, PreActResNet18),
    "mfcc-cnn": (_mfcc, MFCCCNN),
    "gin": (_gin, GIN),
}
_FIXED = {"in_features", "in_channels", "num_classes", "image_size"}
# Models whose forward takes a PyG graph batch; every other model takes a tensor batch.
_GRAPH_MODELS = {"gin"}


def names() -> list[str]:
    """Registered model names.

    Example:
        >>> names()
        ['gin', 'mfcc-cnn', 'mlp', 'preact-resnet18', 'small-cnn', 'small-vgg']
    """
    return sorted(_BUILDERS)


def build(
    name: str, *, input_shape: Sequence[int], num_classes: int, domain: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a model for samples of ``input_shape`` and ``num_classes`` classes.

    Options are the model's own keyword arguments (e.g. ``hidden=``, ``width=``). ``domain``
    (a dataset's ``domain``) refuses a model that cannot take that data: graphs need a graph
    model, every other domain a tensor model.

    Example:
        >>> net = build("mlp", input_shape=(16,), num_classes=26, hidden=(64,))
        >>> net.mix_layers
        ('blocks.0',)
    """
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of {names()}")
    if domain is not None and (domain == "graphs") != (name in _GRAPH_MODELS):
        takes, fits = (("graph batches", "mlp") if name in _GRAPH_MODELS
                       else ("tensor batches", sorted(_GRAPH_MODELS)[0]))
        raise ConfigError(
            f"model {name!r} takes {takes} but the data is {domain}; use a model for "
            f"{domain}, e.g. {fits!r}"
        )
    shape = tuple(input_shape)
    if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
        raise ConfigError(f"input_shape={input_shape!r} must be a tuple of positive integers")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"num_classes={num_classes!r} must be an integer >= 2")
    builder, cls = _BUILDERS[name]
    accepted = set(inspect.signature(cls).parameters) - _FIXED
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"model {name!r} does not take option(s) {unknown}; it accepts {sorted(accepted)}"
        )
    return builder(shape, num_classes, **options)
