"""Mixing outside the model: as a DataLoader ``collate_fn``, or on a batch already collated.

:class:`MixCollate` wraps a model-free mixer (:class:`~mixupe.Mixup`, :class:`~mixupe.CutMix`,
:class:`~mixupe.FMix`, :class:`~mixupe.ResizeMix`, :class:`~mixupe.SaliencyMix`, and
:class:`~mixupe.Switch` or :class:`~mixupe.Scheduled` over model-free mixers, such as timm's
Mixup-or-CutMix switch) and returns the mixed inputs with soft targets ``(B, K)``, which
``torch.nn.functional.cross_entropy(logits, targets)`` accepts as class probabilities (as
torchvision's ``transforms.v2.MixUp`` and timm's ``Mixup`` do).

It relies on a mixer's two steps: ``plan(...)`` draws the parameters (lambda, the pairing, a box
or mask), and ``plan.mix(x)`` applies them. A mixer qualifies when its class sets
``model_free = True``, a promise that its ``plan`` never looks at the model and mixes at the
input; any such mixer plugs in unchanged.

Training on the soft targets equals training on the mixed losses only for losses linear in the
target: ``CE(f, lam Y_a + (1 - lam) Y_b) = lam CE(f, Y_a) + (1 - lam) CE(f, Y_b)``. That holds
for cross-entropy with or without label smoothing (smoothing is affine with weights summing to
one, so it commutes with mixing) and for binary cross-entropy per class. It does not hold for
the Brier score or any squared error (the soft-target loss is smaller by
``lam (1 - lam) |Y_a - Y_b|^2``, a constant in the model, so gradients still agree), for the
KL divergence (off by the target's entropy, again constant in the model), for focal or any
loss that weights classes by the model's own confidence, nor for MixupE, whose extra term needs
the clean labels (use the :class:`~mixupe.MixupE` objective, which mixes inside the step).

Random draws come from the mixer's generator in the main process. In DataLoader worker
processes each worker draws from its own generator seeded from the mixer's initial seed and the
worker seed PyTorch gives it (new each epoch, reproducible through the DataLoader's
``generator=``), so workers never repeat each other's draws, nor an epoch's. The same holds
under every start method (``fork``, ``spawn``, ``forkserver``): a MixCollate pickles its
mixer with each ``torch.Generator`` as plain bytes, because PyTorch pickles a generator's
state as a tensor that its default ``file_descriptor`` sharing cannot rebuild in a spawned
worker ("unable to resize file ... Invalid argument"), which crashed the workers.

Example:
    >>> import torch, mixupe
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> data = TensorDataset(torch.randn(8, 3, 4, 4), torch.arange(8) % 2)
    >>> collate = MixCollate(mixupe.CutMix(alpha=1.0, num_classes=2, seed=0))
    >>> x, targets = next(iter(DataLoader(data, batch_size=4, collate_fn=collate)))
    >>> x.shape, targets.shape, bool(torch.allclose(targets.sum(1), torch.ones(4)))
    (torch.Size([4, 3, 4, 4]), torch.Size([4, 2]), True)
    >>> logits = torch.randn(4, 2, requires_grad=True)
    >>> torch.nn.functional.cross_entropy(logits, targets).backward()
"""

from __future__ import annotations

import copyreg
import io
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.base import MixPlan, input_device, work_dtype
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.mixer import Mixer

__all__ = ["MixCollate"]


class MixCollate:
    """Mix every batch the DataLoader assembles (``collate_fn=MixCollate(mixer)``), or a batch
    already collated (``MixCollate(mixer).mix(x, y)``).

    Args:
        mixer: a model-free mixer (``model_free`` true): ``Mixup``, ``CutMix``, ``FMix``,
            ``ResizeMix``, ``SaliencyMix``, or ``Switch`` / ``Scheduled`` over such mixers.
            Its ``num_classes``, ``label_smoothing``, ``per_sample`` and generator
            apply.
        collate_fn: how samples become ``(x, y)`` before mixing; default PyTorch's
            ``default_collate``. Extra collated fields after ``(x, y)`` are refused.

    Returns ``(x_mixed, targets)``: a new input tensor (the batch is not modified) and float
    soft targets ``(B, K)`` whose rows sum to one.
    """

    def __init__(
        self, mixer: Mixer, *, collate_fn: Callable[[Sequence[Any]], Any] | None = None
    ) -> None:
        if not isinstance(mixer, Mixer) or not getattr(mixer, "model_free", False):
            raise ConfigError(
                f"MixCollate needs a model-free mixer such as Mixup(...), CutMix(...), FMix(...) "
                f"or Switch(Mixup(...), CutMix(...)), got "
                f"{type(mixer).__name__}: mixing at a hidden layer (ManifoldMixup) or with a "
                "clean pass (MixupE) needs the model, so use that objective in the training step"
            )
        if collate_fn is None:
            from torch.utils.data import default_collate

            collate_fn = default_collate
        self.mixer = mixer
        self.collate_fn = collate_fn
        self._worker: tuple[tuple[int, int], torch.Generator] | None = None

    def __getstate__(self) -> dict[str, bytes]:
        """The mixer and collate function as bytes, generators by their state (see above)."""
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer)
        pickler.dispatch_table = {**copyreg.dispatch_table, torch.Generator: _reduce_generator}
        pickler.dump((self.mixer, self.collate_fn))
        return {"payload": buffer.getvalue()}

    def __setstate__(self, state: dict[str, bytes]) -> None:
        self.mixer, self.collate_fn = pickle.loads(state["payload"])
        self._worker = None

    def __call__(self, samples: Sequence[Any]) -> tuple[Tensor, Tensor]:
        """Collate ``samples`` into ``(x, y)`` and mix them (the DataLoader's ``collate_fn``)."""
        batch = self.collate_fn(samples)
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise InputError(
                f"the collated batch is {type(batch).__name__} of length "
                f"{len(batch) if isinstance(batch, (tuple, list)) else '?'}; MixCollate needs "
                "samples of the form (input, label) so that batches collate to (x, y)"
            )
        return self.mix(batch[0], batch[1])

    def generator(self) -> torch.Generator:
        """The generator of this process: the mixer's, or a DataLoader worker's own."""
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        if info is None:
            return self.mixer.generator
        key = (os.getpid(), int(info.seed))
        if self._worker is None or self._worker[0] != key:
            seed = (self.mixer.generator.initial_seed() ^ int(info.seed)) % (1 << 63)
            self._worker = (key, torch.Generator().manual_seed(seed))
        return self._worker[1]

    def plan(
        self, x: Tensor, y: Tensor, *, lam: Tensor | float | None = None,
        perm: Tensor | None = None,
    ) -> tuple[MixPlan, Tensor]:
        """Draw the mixing parameters of a batch: the mixer's plan and the clean targets."""
        mixer = self.mixer
        batch_size = mixer._batch_size(x, y)
        dtype = work_dtype(x)
        clean = mixer._clean_targets(y, dtype)
        mixer._check_inputs(x)
        plan = mixer.plan(
            None,  # model-free mixers never read the model
            x,
            batch_size,
            device=input_device(x, y),
            dtype=dtype,
            lam=lam,
            perm=perm,
            generator=self.generator(),
        )
        if plan.layer != INPUT_LAYER:
            raise ConfigError(
                f"{type(mixer).__name__} planned to mix at {plan.layer!r}; a collate function can "
                "only mix inputs"
            )
        return plan, clean

    def mix(
        self, x: Tensor, y: Tensor, *, lam: Tensor | float | None = None,
        perm: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Mix a collated batch: ``(x_mixed, soft targets)``; ``lam=``/``perm=`` fix the draw."""
        plan, clean = self.plan(x, y, lam=lam, perm=perm)
        targets = MF.mix_targets(
            clean, plan.perm, plan.lam, label_smoothing=self.mixer.label_smoothing,
            dtype=clean.dtype,
        )
        return plan.mix(x), targets


def _reduce_generator(generator: torch.Generator) -> tuple[Any, tuple[Any, ...]]:
    """Pickle a generator as its device, initial seed and state bytes (no tensor)."""
    state = generator.get_state().numpy().tobytes()
    return _rebuild_generator, (str(generator.device), generator.initial_seed(), state)


def _rebuild_generator(device: str, seed: int, state: bytes) -> torch.Generator:
    generator = torch.Generator(device).manual_seed(seed)
    generator.set_state(torch.frombuffer(bytearray(state), dtype=torch.uint8))
    return generator
