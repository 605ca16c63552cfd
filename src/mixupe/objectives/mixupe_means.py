"""MixupE's directions of versions 1/2: the data mean and the representation means.

:class:`DirectionMeans` is the part of :class:`~mixupe.objectives.mixupe.MixupE` that holds
the data mean ``x_bar`` (set or fitted), the moving averages of the representations' batch
means (all-reduced under ``torch.distributed``), the direction ``mean - h`` of each clean
pass, and their checkpoint state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.manifold import ManifoldMixup

__all__ = ["DirectionMeans"]


class DirectionMeans:
    """The means MixupE's versions 1/2 differentiate towards (a mixin of MixupE).

    The class using it sets ``version``, ``mixing``, ``mean_decay``, ``sync_layer_means`` and
    ``generator``, and calls :meth:`_init_means` in its ``__init__``.
    """

    version: int
    mixing: Any
    mean_decay: float
    sync_layer_means: bool | None
    generator: torch.Generator

    def _init_means(self) -> None:
        self._data_mean: Tensor | None = None
        self._mean_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self.layer_means: dict[str, Tensor] = {}

    @property
    def data_mean(self) -> Tensor | None:
        """The data mean ``x_bar`` as set (float64), or None."""
        return self._data_mean

    def set_data_mean(self, mean: Tensor) -> None:
        """Set ``x_bar``: a tensor of the shape of one input, or with a leading 1.

        The shape is matched against the inputs at each call (a leading 1 is dropped there,
        which keeps one-channel images of shape (1, H, W) unambiguous).

        Example:
            >>> from mixupe import MixupE
            >>> obj = MixupE(version=1, num_classes=3)
            >>> obj.set_data_mean(torch.zeros(1, 4))
            >>> tuple(obj.data_mean.shape)
            (1, 4)
        """
        if not isinstance(mean, Tensor) or mean.dim() == 0:
            raise InputError(
                f"data mean {mean!r} is invalid: pass a tensor with the shape of one input "
                "(or with a leading 1), e.g. x_train.mean(0)."
            )
        mean = mean.detach().to(dtype=torch.float64)
        MF.check_finite_tensor(mean, "data mean")
        self._data_mean = mean
        self._mean_cache = {}

    def fit_data_mean(self, batches: Iterable[Any]) -> Tensor:
        """Compute ``x_bar`` in one streaming pass (float64 sums) and set it; returns it.

        Each item is a tensor batch ``(B, ...)`` or a tuple/list whose first element is one.

        Example:
            >>> from mixupe import MixupE
            >>> obj = MixupE(version=1, num_classes=3)
            >>> obj.fit_data_mean([torch.ones(2, 4), (3 * torch.ones(2, 4), None)]).tolist()
            [2.0, 2.0, 2.0, 2.0]
        """
        total: Tensor | None = None
        count = 0
        for item in batches:
            xb = item[0] if isinstance(item, (tuple, list)) else item
            if not isinstance(xb, Tensor) or xb.dim() < 2:
                raise InputError(
                    f"fit_data_mean got a batch of type {type(xb).__name__}: pass an iterable "
                    "of tensor batches (B, ...) or (x, y) pairs."
                )
            part = xb.detach().to(torch.float64).sum(0)
            if total is not None and part.shape != total.shape:
                raise InputError(
                    f"fit_data_mean got batches of different sample shapes {tuple(total.shape)} "
                    f"and {tuple(part.shape)}: pass batches of one dataset."
                )
            total = part if total is None else total + part
            count += xb.shape[0]
        if total is None or count == 0:
            raise InputError(
                "fit_data_mean got no samples: pass an iterable of non-empty training batches."
            )
        mean = (total / count).cpu()
        self.set_data_mean(mean)
        return mean

    def _input_mean(self, x: Tensor) -> Tensor:
        if self._data_mean is None:
            raise ConfigError(
                f"MixupE version {self.version} needs the data mean x_bar: call "
                "set_data_mean(x_train.mean(0)) or fit_data_mean(train_batches) before "
                "training (or use version 3/4)."
            )
        key = (x.device, x.dtype)
        if key in self._mean_cache:
            return self._mean_cache[key]
        mean = self._data_mean
        if tuple(mean.shape) == (1, *x.shape[1:]):
            mean = mean[0]
        if tuple(mean.shape) != tuple(x.shape[1:]):
            raise InputError(
                f"the data mean has shape {tuple(self._data_mean.shape)} but one input has shape "
                f"{tuple(x.shape[1:])}: set a mean of shape {tuple(x.shape[1:])} (or "
                f"(1, {', '.join(str(s) for s in x.shape[1:])}))."
            )
        self._mean_cache[key] = mean.to(device=x.device, dtype=x.dtype)
        return self._mean_cache[key]

    def _distributed(self) -> bool:
        if self.sync_layer_means is False:
            return False
        running = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        if self.sync_layer_means and not running:
            raise ConfigError(
                "sync_layer_means=True but no torch.distributed process group of more than one "
                "process is running: start one (torchrun) or leave sync_layer_means=None."
            )
        return running

    def _layer_mean(self, layer: str, h: Tensor) -> Tensor:
        acc_dtype = torch.promote_types(h.dtype, torch.float32)
        if self._distributed():
            # Sums and counts over every rank's batch (no gradient flows through them).
            local = h.detach().to(acc_dtype)
            packed = torch.cat([local.sum(0).reshape(-1), local.new_full((1,), local.shape[0])])
            dist.all_reduce(packed, op=dist.ReduceOp.SUM)
            batch_mean = (packed[:-1] / packed[-1]).reshape(local.shape[1:])
        else:
            batch_mean = h.detach().to(acc_dtype).mean(0)
        old = self.layer_means.get(layer)
        if old is None or old.shape != batch_mean.shape:
            new = batch_mean
        else:
            # A mean restored from a checkpoint lives on the CPU: it continues on this device.
            old = old.to(device=batch_mean.device, dtype=acc_dtype)
            new = self.mean_decay * old + (1.0 - self.mean_decay) * batch_mean
        self.layer_means[layer] = new
        return new.to(h.dtype)

    def _direction(self, layer: str, h: Tensor) -> Tensor:
        if layer == INPUT_LAYER and (
            self._data_mean is not None or not isinstance(self.mixing, ManifoldMixup)
        ):
            return (self._input_mean(h) - h).detach()
        return (self._layer_mean(layer, h) - h.detach()).detach()

    def state_dict(self) -> dict[str, Any]:
        """The learned state (data mean, representation means) for checkpoints."""
        return {
            "data_mean": self._data_mean,
            "layer_means": {k: v.detach().cpu() for k, v in self.layer_means.items()},
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state.get("data_mean") is not None:
            self.set_data_mean(state["data_mean"])
        self.layer_means = dict(state.get("layer_means", {}))
        if "generator" in state:
            self.generator.set_state(state["generator"])
