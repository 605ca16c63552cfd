"""Model-free mask mixers: FMix, ResizeMix and SaliencyMix.

Each draws its parameters first (``sample_mask`` / ``sample_box``: lambda, pairing, mask or
box, all from the objective's generator) and then applies them in the plan's ``mix``; the
label weight of ``x`` is always the exact kept fraction of the mask, per mask. All three
work on images ``(B, C, H, W)``, 1-D signals ``(B, C, L)`` and, with ``channels_last=True``,
sequences ``(B, L, D)`` such as MFCC frames (the mask runs along L). They refuse feature
vectors ``(B, F)`` and graph batches, which have no spatial neighbourhood.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError
from mixupe.functional import masks as MM
from mixupe.objectives.base import MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.mixer import Mixer

__all__ = ["FMix", "ResizeMix", "SaliencyMix", "spatial_layout"]


_ONE_TENSOR = (
    "the mask mixers (FMix, ResizeMix, SaliencyMix) take no mix_keys; use Mixup(mix_keys=...) "
    "or CutMix(mix_keys=...) to mix chosen entries of a dict or tuple batch, or pass the image "
    "or signal tensor itself as the batch"
)


def spatial_layout(
    x: Any, *, spatial_dims: int | None, channels_last: bool, method: str
) -> MM.Layout:
    """The layout of a batch with a spatial neighbourhood, or raise naming the fix."""
    if isinstance(x, dict | tuple | list):
        raise ConfigError(
            f"{method} mixes one input tensor, got a {type(x).__name__} batch: {_ONE_TENSOR}"
        )
    layout = MM.layout_of(x, spatial_dims=spatial_dims, channels_last=channels_last,
                          method=method)
    if layout.ndim == 2:
        raise ConfigError(
            f"{method} needs inputs with a spatial or temporal axis, got feature vectors of "
            f"shape {tuple(x.shape)}: use Mixup or CutMix for tabular data, or pass images "
            "(B, C, H, W), signals (B, C, L) or sequences (B, L, D) with channels_last=True."
        )
    return layout


def given_mask(
    mask: Any, layout: MM.Layout, batch_size: int, device: torch.device, *,
    inputs: Tensor | None = None, validate: bool = True,
) -> Tensor:
    """Check a caller's mask ``(1 or B, *spatial)`` (partner weight) and move it to ``device``.

    A float or integer mask must hold weights in [0, 1] (checked when ``validate``; it reads
    the mask, a device synchronisation), and on integer ``inputs`` (uint8 images) only 0 and
    1, since a fractional weight cannot blend integer pixels (always checked).
    """
    shapes = ((1, *layout.spatial), (batch_size, *layout.spatial))
    if not isinstance(mask, Tensor) or tuple(mask.shape) not in shapes:
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(
            f"mask of shape {shape} is invalid: pass a bool or float tensor of shape {shapes[0]} "
            f"or {shapes[1]}, True/1 where the partner sample shows."
        )
    mask = mask.to(device)
    if mask.dtype == torch.bool or mask.numel() == 0:
        return mask
    integer_inputs = inputs is not None and not inputs.is_floating_point()
    if validate or integer_inputs:
        lo, hi = float(mask.min()), float(mask.max())
        if not (lo >= 0.0 and hi <= 1.0):  # also refuses NaN
            raise InputError(
                f"mask holds {lo if not lo >= 0.0 else hi!r}, outside [0, 1]: a mask is the "
                "partner's weight per position, 0 (x shows) to 1 (the partner shows); a weight "
                "outside would give lam outside [0, 1] and negative targets."
            )
        if integer_inputs and not bool(((mask == 0) | (mask == 1)).all()):
            raise InputError(
                f"a fractional mask cannot blend {inputs.dtype} inputs (the blend would be "
                "rounded away while lam counts it): pass a bool or 0/1 mask, or convert the "
                "inputs to float first."
            )
    return mask


class _MaskMixer(Mixer):
    """Shared options and the final step of the mask mixers."""

    model_free = True  # plan() ignores the model and mixes inputs: usable in MixCollate

    def __new__(cls, *args: Any, **kwargs: Any) -> _MaskMixer:
        if "mix_keys" in kwargs:  # refused here, before __init__'s bare "unexpected keyword"
            raise ConfigError(f"{cls.__name__}(mix_keys=...) is not an option: {_ONE_TENSOR}.")
        return super().__new__(cls)

    def __init__(self, *, spatial_dims: int | None, channels_last: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check.among(spatial_dims, "spatial_dims", (None, 1, 2),
                    use="1 (signals), 2 (images) or None to infer it from the batch")
        self.spatial_dims = spatial_dims
        self.channels_last = bool(channels_last)

    def _layout(self, x: Any) -> MM.Layout:
        return spatial_layout(x, spatial_dims=self.spatial_dims,
                              channels_last=self.channels_last, method=type(self).__name__)

    def _perm(
        self, batch_size: int, *, device: torch.device, perm: Tensor | None,
        generator: torch.Generator,
    ) -> Tensor:
        if perm is None:
            return to_device(MF.sample_permutation(batch_size, generator=generator), device)
        return self._given_perm(perm, batch_size, device)

    @staticmethod
    def _masked_plan(
        mask: Tensor, perm: Tensor, layout: MM.Layout, dtype: torch.dtype, per_batch: bool
    ) -> MixPlan:
        lam = MM.kept_fraction(mask, dtype)
        lam = lam[0] if per_batch and mask.shape[0] == 1 else lam.expand(perm.shape[0])

        def mix(t: Tensor) -> Tensor:
            return MM.apply_mask(t, t[perm], mask, layout)

        return MixPlan(lam=lam, perm=perm, layer=INPUT_LAYER, mix=mix, mask=mask)


class FMix(_MaskMixer):
    """FMix (Harris et al. 2020): a binary mask from thresholded low-frequency Fourier noise.

    ``lam ~ Beta(alpha, alpha)``; the ``round(lam * area)`` largest values of the noise keep
    ``x``, the rest show ``x[perm]``; the label weight is that exact kept fraction. One mask
    for the batch (released), or one per sample with ``per_sample=True``. ``mask=`` (True
    where the partner shows) makes a step deterministic together with ``perm=``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> out = FMix(num_classes=3, seed=0)(net, torch.randn(4, 1, 8, 8),
        ...                                   torch.tensor([0, 1, 2, 0]))
        >>> bool(torch.isclose(out.lam, 1 - out.mask.float().mean()))
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        decay_power: float = 3.0,
        per_sample: bool = False,
        spatial_dims: int | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, per_sample=per_sample, spatial_dims=spatial_dims,
                         channels_last=channels_last, num_classes=num_classes,
                         label_smoothing=label_smoothing, seed=seed, generator=generator,
                         validate=validate, check_finite=check_finite)
        self.decay_power = check.positive(decay_power, "decay_power",
                                          what="the frequency decay", hint="(FMix uses 3)")

    def sample_mask(
        self, spatial: tuple[int, ...], lam: Tensor, *, generator: torch.Generator,
        device: torch.device,
    ) -> Tensor:
        """Draw FMix masks for ``lam`` (0-d: one mask; ``(B,)``: one per sample)."""
        return MM.fmix_mask(spatial, lam, generator=generator, decay_power=self.decay_power,
                            device=device)

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
        mask: Tensor | None = None,
    ) -> MixPlan:
        """Draw lambda, the pairing and the mask (or take them); lambda is the kept fraction."""
        layout = self._layout(x)
        lam_t, perm_t = self._lam_perm(batch_size, device=device, dtype=dtype, lam=lam,
                                       perm=perm, generator=generator)
        if mask is None:
            mask = self.sample_mask(layout.spatial, lam_t, generator=generator, device=device)
        else:
            mask = given_mask(mask, layout, batch_size, device, inputs=x,
                              validate=self.validate)
        return self._masked_plan(mask, perm_t, layout, dtype, per_batch=lam_t.dim() == 0)


class ResizeMix(_MaskMixer):
    """ResizeMix (Qin et al. 2020): the partner image, shrunk, pasted at a random place.

    A scale ``tau ~ U(scale)`` (default U(0.1, 0.8)) sets the box side ``round(tau * size)``
    per axis; ``x[perm]`` is resized to the box (``mode``: "nearest" as in the reference
    implementation, or "bilinear") and pasted at a uniformly random place inside ``x``. The
    label weight of ``x`` is the exact kept area ``1 - box area / area``. One box for the
    batch. ``lam=`` fixes the box to cover ``1 - lam`` (side ``sqrt(1 - lam)`` in 2-D,
    ``1 - lam`` in 1-D, rounded); ``box=(starts, sizes)`` fixes it completely.

    MixupE's constant is ``c = 2 E[lam (1 - lam)]`` for ``lam = 1 - tau^d``, ``d`` the number
    of spatial dims (2 unless ``spatial_dims=1``), in closed form.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(100, 2))
        >>> out = ResizeMix(num_classes=2, seed=0)(net, torch.randn(3, 1, 10, 10),
        ...                                        torch.tensor([0, 1, 1]))
        >>> bool(torch.isclose(out.lam, 1 - out.mask.float().mean()))
        True
    """

    def __init__(
        self,
        *,
        scale: tuple[float, float] = (0.1, 0.8),
        mode: str = "nearest",
        spatial_dims: int | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=None, spatial_dims=spatial_dims, channels_last=channels_last,
                         num_classes=num_classes, label_smoothing=label_smoothing, seed=seed,
                         generator=generator, validate=validate, check_finite=check_finite)
        if not (
            isinstance(scale, (tuple, list)) and len(scale) == 2
            and all(isinstance(v, (int, float)) for v in scale)
            and 0.0 < scale[0] <= scale[1] <= 1.0
        ):
            raise ConfigError(
                f"scale={scale!r} is invalid: pass (low, high) with 0 < low <= high <= 1 "
                "(ResizeMix uses (0.1, 0.8))."
            )
        check.one_of(mode, "mode", ("nearest", "bilinear"))
        self.scale = (float(scale[0]), float(scale[1]))
        self.mode = mode

    def spatial_rank(self) -> int:
        """The number of spatial dims ``d`` of the boxes: ``spatial_dims`` if given, 1 with
        ``channels_last=True``, else that of the last batch planned (2 before the first)."""
        if self.spatial_dims is not None:
            return self.spatial_dims
        if self.channels_last:
            return 1
        return getattr(self, "_seen_rank", 2)

    def mixupe_constant(self) -> float:
        """``2 E[tau^d (1 - tau^d)]`` for ``tau ~ U(scale)``, ``d`` = :meth:`spatial_rank`
        (inferred from the batch when neither ``spatial_dims`` nor ``channels_last`` fixes it;
        MixupE reads it every step)."""
        d = self.spatial_rank()
        lo, hi = self.scale

        def moment(k: int) -> float:  # E[tau^k]
            if hi == lo:
                return lo**k
            return (hi ** (k + 1) - lo ** (k + 1)) / ((k + 1) * (hi - lo))

        return 2.0 * (moment(d) - moment(2 * d))

    def sample_box(
        self, spatial: tuple[int, ...], *, generator: torch.Generator,
        lam: Tensor | float | None = None,
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Draw the paste box as host integers ``(starts, sizes)``.

        The scale and place are drawn on the generator's device and read on the host (free for
        the default CPU generator). ``lam`` (in [0, 1]) fixes the scale to ``(1 - lam)^(1/d)``.
        """
        if lam is None:
            u = torch.rand((1,), generator=generator, device=generator.device,
                           dtype=torch.float64)
            tau = self.scale[0] + (self.scale[1] - self.scale[0]) * u
        else:
            area = 1.0 - float(lam)
            tau = torch.full((1,), area ** (1.0 / len(spatial)), dtype=torch.float64,
                             device=generator.device)
        starts, sizes = MM.resizemix_box(spatial, tau, generator=generator)
        return tuple(starts[0].tolist()), tuple(sizes[0].tolist())

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
        box: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    ) -> MixPlan:
        """Draw (or take) the pairing and the box; lambda is the kept area."""
        layout = self._layout(x)
        self._seen_rank = len(layout.spatial)
        if lam is not None:
            if isinstance(lam, Tensor) and lam.dim() != 0:
                raise InputError("ResizeMix uses one box per batch: pass a single lam, not (B,).")
            lam = float(self._given_lam(lam, 1, torch.device("cpu"), torch.float64))
            if not 0.0 <= lam <= 1.0:  # a tensor lam when validate=False: still read here
                raise ConfigError(f"lam={lam!r} is invalid: pass a value in [0, 1].")
        perm_t = self._perm(batch_size, device=device, perm=perm, generator=generator)
        if box is None:
            starts, sizes = self.sample_box(layout.spatial, generator=generator, lam=lam)
        else:
            starts, sizes = _check_box(box, layout.spatial)
        mask = MM.host_box_mask(layout.spatial, starts, sizes, device)
        lam_t = MM.kept_fraction(mask, dtype)[0]
        mode = self.mode

        def paste(t: Tensor) -> Tensor:
            return MM.paste_resized(t, t[perm_t], starts, sizes, layout, mode=mode)

        return MixPlan(lam=lam_t, perm=perm_t, layer=INPUT_LAYER, mix=paste, mask=mask)


def _check_box(box: Any, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    try:
        starts, sizes = (tuple(int(v) for v in part) for part in box)
    except (TypeError, ValueError):
        starts, sizes = (), ()
    ok = len(starts) == len(sizes) == len(spatial) and all(
        s >= 0 and k >= 1 and s + k <= n for s, k, n in zip(starts, sizes, spatial, strict=True)
    )
    if not ok:
        raise InputError(
            f"box={box!r} is invalid: pass (starts, sizes), one int per spatial axis of "
            f"{spatial}, with each box inside the input."
        )
    return starts, sizes


class SaliencyMix(_MaskMixer):
    """SaliencyMix (Uddin et al., ICLR 2021): a box centred on the source's saliency peak.

    ``lam ~ Beta(alpha, alpha)`` sets ``cut = floor(sqrt(1 - lam) * size)`` per axis as
    CutMix does; the box ``[peak - cut // 2, peak + cut // 2)`` (side ``2 floor(cut / 2)``,
    as released) is centred on the peak of the source image ``x[perm]``'s saliency map, and
    that region of the source is pasted into ``x`` at the same place. As released, one box
    for the batch, placed by the saliency of the first source (``per_sample=True``: each
    sample's box from its own source). The label weight is the exact kept area after
    clipping. ``mask=`` makes the step deterministic with ``perm=``.

    Args:
        saliency: ``"fine_grained"`` (default, the authors' choice: Montabone & Soto's
            fine-grained static saliency as OpenCV computes it, see
            :func:`mixupe.functional.masks.fine_grained_saliency`) or
            ``"spectral_residual"`` (Hou & Zhang 2007, a few FFTs: cheaper on large images
            and on the device, but its peaks are elsewhere).
        blur: the spectral residual's Gaussian blur, a fraction of the longest side (0: none);
            only with ``saliency="spectral_residual"``.
        alpha, per_sample, spatial_dims, channels_last: see :class:`FMix`.
        num_classes, label_smoothing, seed, generator, validate, check_finite: see :class:`FMix`.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
        >>> out = SaliencyMix(num_classes=2, seed=0)(net, torch.randn(3, 1, 8, 8),
        ...                                          torch.tensor([0, 1, 1]))
        >>> bool(torch.isclose(out.lam, 1 - out.mask.float().mean()))
        True
    """

    SALIENCY = ("fine_grained", "spectral_residual")

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        per_sample: bool = False,
        saliency: str = "fine_grained",
        blur: float = 0.125,
        spatial_dims: int | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, per_sample=per_sample, spatial_dims=spatial_dims,
                         channels_last=channels_last, num_classes=num_classes,
                         label_smoothing=label_smoothing, seed=seed, generator=generator,
                         validate=validate, check_finite=check_finite)
        self.saliency = check.one_of(saliency, "saliency", self.SALIENCY,
                                     use="'fine_grained' (the authors') or 'spectral_residual' "
                                         "(cheaper)")
        self.blur = check.non_negative(blur, "blur", what="a fraction of the side",
                                       hint="(0: no blur)")

    def saliency_map(self, sources: Tensor, layout: MM.Layout) -> Tensor:
        """The saliency maps ``(N, *spatial)`` of ``sources``."""
        if self.saliency == "fine_grained":
            return MM.fine_grained_saliency(sources, layout)
        return MM.spectral_residual_saliency(sources, layout, blur=self.blur)

    def sample_mask(self, sources: Tensor, lam: Tensor, layout: MM.Layout) -> Tensor:
        """Boxes (True inside) centred on the saliency peaks of ``sources``."""
        starts, sizes = MM.peak_box(self.saliency_map(sources, layout), lam)
        return MM.box_mask(layout.spatial, starts, sizes)

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
        mask: Tensor | None = None,
    ) -> MixPlan:
        """Draw lambda and the pairing, place the box(es); lambda is the kept area."""
        layout = self._layout(x)
        lam_t, perm_t = self._lam_perm(batch_size, device=device, dtype=dtype, lam=lam,
                                       perm=perm, generator=generator)
        if mask is None:
            sources = x[perm_t] if lam_t.dim() == 1 else x[perm_t[:1]]
            mask = self.sample_mask(sources, lam_t, layout)
        else:
            mask = given_mask(mask, layout, batch_size, device, inputs=x,
                              validate=self.validate)
        return self._masked_plan(mask, perm_t, layout, dtype, per_batch=lam_t.dim() == 0)
