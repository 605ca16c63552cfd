"""The base of the mixing objectives: :class:`Mixer` (alpha, lambda draws, mixed entries).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError
from mixupe.objectives.base import Objective
from mixupe.objectives.batches import _entries, is_structured, map_entries

__all__ = ["Mixer", "check_mixing"]


def check_mixing(mixing: Any) -> None:
    """Raise :class:`ConfigError` unless ``mixing`` is a mixing objective (a :class:`Mixer`)."""
    if not isinstance(mixing, Mixer):
        raise ConfigError(
            f"mixing={mixing!r} is not a mixing objective: pass Mixup(...), CutMix(...) or "
            "another mixer (ERM does not mix)."
        )


class Mixer(Objective):
    """Base of the objectives that mix (Mixup, CutMix, ManifoldMixup, ...): alpha and lambda draws.

    A subclass whose ``plan`` never reads the model and mixes at the input sets
    ``model_free = True``; it then also works as a collate function (:mod:`mixupe.collate`).

    ``alpha=None`` is for mixers whose lambda is not a Beta(alpha, alpha) draw (ResizeMix);
    they override :meth:`mixupe_constant`.

    ``mix_keys`` names the entries of a dict batch (keys) or tuple batch (indices) that input
    mixing mixes; the other entries stay with their sample. Tensor batches need no names.

    ``lambda_sampler`` (a class attribute, set on an instance to change it) picks how Beta
    lambdas are drawn: ``"transform"`` (public uniforms only, the default) or
    ``"dirichlet"`` (mixupe 0.1's draws through PyTorch's private Dirichlet sampler, to
    reproduce runs made before; see :func:`mixupe.functional.sample_lambda`).
    """

    model_free: bool = False
    lambda_sampler: str = "transform"

    def __init__(
        self,
        *,
        alpha: float | None,
        per_sample: bool = False,
        mix_keys: Sequence[str | int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if alpha is not None:
            MF.check_alpha(alpha)
        if mix_keys is not None and (
            isinstance(mix_keys, (str, bytes))
            or not isinstance(mix_keys, Sequence)
            or len(mix_keys) == 0
            or not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in mix_keys)
        ):
            raise ConfigError(
                f"mix_keys={mix_keys!r} is invalid: pass a non-empty list of the dict keys (or "
                "tuple indices) of the batch entries to mix, e.g. mix_keys=['pixel_values']."
            )
        self.alpha = None if alpha is None else float(alpha)
        self.per_sample = bool(per_sample)
        self.mix_keys: tuple[str | int, ...] | None = (
            None if mix_keys is None else tuple(mix_keys)
        )

    def input_keys(self, x: Any) -> tuple[str | int, ...]:
        """The entries of a dict / tuple batch that input mixing mixes (checked against ``x``)."""
        name = type(self).__name__
        if self.mix_keys is None:
            present = [k for k, v in _entries(x) if isinstance(v, Tensor)]
            raise ConfigError(
                f"{name} mixes the inputs, and this {type(x).__name__} batch has the tensor "
                f"entries {present}: name those to mix, e.g. {name}(mix_keys=[{present[0]!r}]), "
                "or mix at a hidden layer with ManifoldMixup(layers=[...])."
            )
        keys = dict(_entries(x))
        for key in self.mix_keys:
            if not isinstance(keys.get(key), Tensor):
                raise ConfigError(
                    f"mix_keys names {key!r}, which is not a tensor entry of the batch (entries: "
                    f"{list(keys)}): name entries that exist."
                )
        return self.mix_keys

    def mixed_tensors(self, x: Any) -> list[Tensor]:
        """The tensors that input mixing mixes: ``[x]``, or the ``mix_keys`` entries."""
        if isinstance(x, Tensor):
            if self.mix_keys is not None:
                raise ConfigError(
                    f"mix_keys={list(self.mix_keys)} names entries of a dict or tuple batch, but "
                    "the batch is a tensor: drop mix_keys."
                )
            return [x]
        if is_structured(x):
            entries = dict(_entries(x))
            return [entries[k] for k in self.input_keys(x)]
        raise ConfigError(
            f"{type(self).__name__} cannot mix inputs of type {type(x).__name__} (a graph "
            "batch): use ManifoldMixup(layers=['pool']) to mix the pooled graph embedding "
            "instead."
        )

    def at_input(self, x: Any, fn: Callable[[Tensor], Tensor]) -> Callable[[Any], Any]:
        """A transformation of the whole input batch that applies ``fn`` to what is mixed."""
        if isinstance(x, Tensor) and self.mix_keys is None:
            return fn
        self.mixed_tensors(x)  # refuses what cannot be mixed
        keys = self.input_keys(x)
        return lambda batch: map_entries(batch, keys, fn)

    def mixupe_constant(self) -> float:
        """MixupE's ``c = 2 E[lam (1 - lam)]`` for this mixer's lambda distribution.

        For Beta(alpha, alpha) this is ``alpha / (2 alpha + 1)``, one minus the mean of the
        re-weighted Beta(alpha + 1, alpha) of the paper.
        """
        if self.alpha is None:
            raise ConfigError(
                f"{type(self).__name__} draws no Beta(alpha, alpha) lambda and defines no "
                "MixupE constant: override mixupe_constant()."
            )
        return MF.mixupe_constant(self.alpha)

    def _lam_perm(
        self,
        batch_size: int,
        *,
        device: torch.device,
        dtype: torch.dtype,
        lam: Tensor | float | None,
        perm: Tensor | None,
        generator: torch.Generator,
    ) -> tuple[Tensor, Tensor]:
        if lam is None:
            lam_t = to_device(MF.sample_lambda(
                self.alpha,
                batch_size=batch_size,
                per_sample=self.per_sample,
                generator=generator,
                dtype=dtype,
                method=self.lambda_sampler,
            ), device)
        else:
            lam_t = self._given_lam(lam, batch_size, device, dtype)
        if perm is None:
            perm_t = to_device(MF.sample_permutation(batch_size, generator=generator), device)
        else:
            perm_t = self._given_perm(perm, batch_size, device)
        return lam_t, perm_t
