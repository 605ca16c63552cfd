"""Manifold Mixup (Verma et al. 2019): mix hidden representations of any ``nn.Module``.

Each step draws one layer uniformly from ``layers`` (names from ``model.named_modules()``, or
``"input"``) and replaces that submodule's output ``h`` by ``lam h + (1 - lam) h[perm]`` with a
forward hook; targets are mixed with the same lambda (the standard form, not 50/50 targets).
Lambda is cast to the dtype of ``h``, so mixing under autocast keeps half precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.base import MixPlan, is_structured
from mixupe.objectives.hooks import INPUT_LAYER, check_layer_names
from mixupe.objectives.mixer import Mixer

__all__ = ["ManifoldMixup"]


class ManifoldMixup(Mixer):
    """Mix at a layer drawn per step from named submodules of any model.

    Args:
        alpha: lambda ~ Beta(alpha, alpha); must be > 0.
        layers: names to draw from (``"input"`` allowed). ``None`` uses the model's
            ``mix_layers`` attribute (the models of :mod:`mixupe.models` define it).
        per_sample: one lambda per sample instead of one per batch.
        mix_keys: for dict / tuple batches, the entries mixed at ``"input"`` (hidden layers
            need no names).
        num_classes, label_smoothing, seed, generator, validate, check_finite: see
            :class:`mixupe.objectives.base.Objective`.

    A call may pass ``layer=`` (with ``lam=`` and ``perm=``) to make the step deterministic.
    The layer index is drawn from the objective's generator and read on the host; with the
    default CPU generator this costs no device synchronisation.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> mm = ManifoldMixup(alpha=2.0, layers=["input", "1"], num_classes=3, seed=0)
        >>> out = mm(net, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]))
        >>> out.layer in ("input", "1")
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        layers: Sequence[str] | None = None,
        per_sample: bool = False,
        mix_keys: Sequence[str | int] | None = None,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(
            alpha=alpha,
            per_sample=per_sample,
            mix_keys=mix_keys,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
            seed=seed,
            generator=generator,
            validate=validate,
            check_finite=check_finite,
        )
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
                raise ConfigError(
                    f"layers={layers!r} is invalid: pass a list of submodule names, e.g. "
                    "layers=['input', 'layer1']."
                )
            if len(layers) == 0:
                raise ConfigError(
                    "layers=[] is empty: pass at least one submodule name (or 'input')."
                )
            layers = tuple(layers)
        self.layers: tuple[str, ...] | None = layers
        self._checked: dict[int, tuple[str, ...]] = {}

    def layers_for(self, model: nn.Module) -> tuple[str, ...]:
        """The candidate layers for ``model``, checked once per model."""
        key = id(model)
        if key in self._checked:
            return self._checked[key]
        layers = self.layers
        if layers is None:
            layers = getattr(model, "mix_layers", None)
            if not layers:
                raise ConfigError(
                    f"{type(model).__name__} has no mix_layers attribute: pass "
                    "ManifoldMixup(layers=[...]) with names from model.named_modules()."
                )
            layers = tuple(layers)
        check_layer_names(model, layers)
        self._checked = {key: layers}
        return layers

    def plan(
        self,
        model: nn.Module,
        x: Any,
        batch_size: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        lam: Tensor | float | None,
        perm: Tensor | None,
        generator: torch.Generator,
        layer: str | None = None,
    ) -> MixPlan:
        """Draw (or take) the layer, lambda and the permutation."""
        layers = self.layers_for(model)
        if layer is None:
            # Drawn where the generator lives; reading it is free for a CPU generator.
            index = int(torch.randint(len(layers), (1,), generator=generator,
                                      device=generator.device))
            layer = layers[index]
        else:
            check_layer_names(model, (layer,))
        if layer == INPUT_LAYER and not isinstance(x, Tensor) and not is_structured(x):
            raise ConfigError(
                f"cannot mix at 'input' for inputs of type {type(x).__name__}: for graph "
                "batches mix the pooled embedding, e.g. ManifoldMixup(layers=['pool'])."
            )
        lam_t, perm_t = self._lam_perm(
            batch_size, device=device, dtype=dtype, lam=lam, perm=perm, generator=generator
        )

        def mix(h: Tensor) -> Tensor:
            if h.shape[0] != batch_size:
                raise InputError(
                    f"layer {layer!r} output has leading size {h.shape[0]} but the batch has "
                    f"{batch_size} samples: mix at a layer whose output is (B, ...)."
                )
            return self.mix_representation(h, perm_t, lam_t, layer)

        if layer == INPUT_LAYER:
            return MixPlan(lam=lam_t, perm=perm_t, layer=layer, mix=self.at_input(x, mix))
        return MixPlan(lam=lam_t, perm=perm_t, layer=layer, mix=mix)

    def mix_representation(self, h: Tensor, perm: Tensor, lam: Tensor, layer: str) -> Tensor:
        """``lam h + (1 - lam) h[perm]``; subclasses (AlignMix) change how ``h`` is mixed."""
        return MF.mix_inputs(h, perm, lam)

