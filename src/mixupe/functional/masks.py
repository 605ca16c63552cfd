"""Pure tensor functions that draw and apply the masks and boxes of the model-free mixers.

FMix (Fourier-noise masks), ResizeMix (a shrunken partner pasted in), SaliencyMix (a box
centred on the peak of a fine-grained or spectral-residual saliency map) and the shared layout
helpers; the saliency maps themselves are computed in :mod:`mixupe.functional.saliency`
and exported here too. The same conventions as :mod:`mixupe.functional`: every random draw
takes an explicit :class:`torch.Generator`; nothing synchronises with the device except where
a docstring says so; inputs are never modified in place.

A mask has shape ``(N, *spatial)`` with ``N`` = 1 (one mask for the batch) or B, and holds
the weight of the *partner* sample ``x[perm]`` (True/1 where the partner shows), as
:func:`mixupe.functional.cutmix_mask` does. The label weight of ``x`` is then
``lam = 1 - mask.mean()`` per mask: the exact kept fraction.

Spatial layouts: ``(B, C, H, W)`` images (2 spatial dims), ``(B, C, L)`` signals and
``(B, F)`` feature vectors (1 spatial dim, the last), and with ``channels_last=True``
``(B, L, D)`` sequences such as MFCC frames (1 spatial dim, the time axis 1).

Example:
    >>> import torch
    >>> from mixupe.functional import masks as MM
    >>> g = torch.Generator().manual_seed(0)
    >>> mask = MM.fmix_mask((8, 8), torch.tensor(0.75), generator=g)
    >>> float(1 - mask.float().mean())
    0.75
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError
from mixupe.functional.saliency import (
    fine_grained_saliency,
    peak_box,
    spectral_residual_saliency,
)

__all__ = [
    "Layout",
    "apply_mask",
    "box_mask",
    "fine_grained_saliency",
    "fmix_mask",
    "host_box_mask",
    "kept_fraction",
    "layout_of",
    "minmax_box",
    "minmax_constant",
    "paste_resized",
    "peak_box",
    "puzzle_adversarial_noise",
    "resizemix_box",
    "spectral_residual_saliency",
]


# ---------------------------------------------------------------------- layouts
@dataclass(frozen=True)
class Layout:
    """Where the spatial dimensions of a batch are.

    Attributes:
        spatial: the spatial shape, ``(L,)`` or ``(H, W)``.
        axes: the dims of the batch tensor that hold it.
        ndim: the number of dims of the batch tensor.
    """

    spatial: tuple[int, ...]
    axes: tuple[int, ...]
    ndim: int

    def view(self, mask: Tensor) -> Tensor:
        """Reshape an ``(N, *spatial)`` mask so it broadcasts against the batch."""
        shape = [mask.shape[0]] + [1] * (self.ndim - 1)
        for axis, size in zip(self.axes, self.spatial, strict=True):
            shape[axis] = size
        return mask.reshape(shape)

    def to_channels_first(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial)`` (a channel dim of 1 is added to ``(B, F)``)."""
        if self.ndim == 2:
            return x.unsqueeze(1)
        if self.axes[0] == 1:  # channels last (B, L, D)
            return x.transpose(1, 2)
        return x

    def from_channels_first(self, x: Tensor) -> Tensor:
        """The inverse of :meth:`to_channels_first`."""
        if self.ndim == 2:
            return x.squeeze(1)
        if self.axes[0] == 1:
            return x.transpose(1, 2)
        return x


def layout_of(
    x: Tensor, *, spatial_dims: int | None = None, channels_last: bool = False, method: str
) -> Layout:
    """The :class:`Layout` of a batch, inferred as CutMix does, or raise naming the fix.

    Example:
        >>> layout_of(torch.zeros(2, 3, 4, 5), method="FMix").spatial
        (4, 5)
        >>> layout_of(torch.zeros(2, 40, 13), channels_last=True, method="FMix").axes
        (1,)
    """
    if not isinstance(x, Tensor):
        raise ConfigError(
            f"{method} mixes raw inputs, which is impossible for inputs of type "
            f"{type(x).__name__} (a graph batch): use ManifoldMixup(layers=['pool']) to mix the "
            "pooled graph embedding instead."
        )
    if channels_last:
        if x.dim() != 3 or spatial_dims not in (None, 1):
            raise ConfigError(
                f"channels_last=True is for sequences (B, L, D) with the mask over L, got "
                f"inputs of shape {tuple(x.shape)} (spatial_dims={spatial_dims!r}): drop "
                "channels_last or pass (B, L, D) inputs."
            )
        return Layout((x.shape[1],), (1,), 3)
    if spatial_dims not in (None, 1, 2):
        raise ConfigError(
            f"spatial_dims={spatial_dims!r} is invalid: use 1 (signals, features), 2 (images) "
            "or None to infer it from the batch."
        )
    sd = spatial_dims if spatial_dims is not None else {2: 1, 3: 1, 4: 2}.get(x.dim())
    if sd is None or x.dim() < sd + 1:
        raise ConfigError(
            f"{method} cannot place a mask on inputs of shape {tuple(x.shape)}: pass images "
            "(B, C, H, W), signals (B, C, L), features (B, F), sequences (B, L, D) with "
            "channels_last=True, or set spatial_dims=1 or 2."
        )
    axes = tuple(range(x.dim() - sd, x.dim()))
    return Layout(tuple(x.shape[a] for a in axes), axes, x.dim())


def kept_fraction(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``1 - mean(mask)`` per mask (the label weight of ``x``), shape ``(N,)``.

    Example:
        >>> kept_fraction(torch.tensor([[True, False, False, False]])).tolist()
        [0.75]
    """
    n = mask.shape[0]
    return (1.0 - mask.reshape(n, -1).to(torch.float64).mean(1)).to(dtype)


def apply_mask(x: Tensor, partner: Tensor, mask: Tensor, layout: Layout) -> Tensor:
    """``x`` where the mask is 0/False, ``partner`` where it is 1/True, a blend in between.

    Example:
        >>> lay = layout_of(torch.zeros(1, 4), method="doc")
        >>> apply_mask(torch.zeros(1, 4), torch.ones(1, 4), torch.tensor([[1, 0, 0, 1]]),
        ...            lay).tolist()
        [[1.0, 0.0, 0.0, 1.0]]
    """
    view = layout.view(mask)
    if view.dtype == torch.bool:
        return torch.where(view, partner, x)
    w = view.to(x.dtype)
    return x * (1 - w) + partner * w


# ---------------------------------------------------------------------- FMix
def _fourier_frequencies(spatial: tuple[int, ...], device: torch.device) -> Tensor:
    """Magnitude of the sample frequencies of an rfft of this spatial shape."""
    last = torch.fft.rfftfreq(spatial[-1], device=device, dtype=torch.float64)
    if len(spatial) == 1:
        return last.abs()
    first = torch.fft.fftfreq(spatial[0], device=device, dtype=torch.float64)
    return torch.sqrt(first[:, None] ** 2 + last[None, :] ** 2)


def fmix_mask(
    spatial: tuple[int, ...],
    lam: Tensor,
    *,
    generator: torch.Generator,
    decay_power: float = 3.0,
    device: torch.device | str | None = None,
) -> Tensor:
    """FMix masks (Harris et al. 2020): threshold low-frequency Fourier noise.

    Complex Gaussian noise in the Fourier domain is scaled by ``1 / f^decay_power`` (``f`` the
    frequency magnitude, floored at ``1 / max(spatial)``), transformed back, and the
    ``round(lam * area)`` largest values are kept: the mask is False there (``x`` shows) and
    True elsewhere (the partner shows). ``lam`` is 0-d (one mask) or ``(B,)`` (one mask per
    sample). The kept fraction equals ``lam`` up to one element; use
    :func:`kept_fraction` for the exact label weight.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> m = fmix_mask((10,), torch.tensor([0.3, 0.8]), generator=g)
        >>> [round(v, 6) for v in kept_fraction(m).tolist()]
        [0.3, 0.8]
    """
    if len(spatial) not in (1, 2) or any(s < 1 for s in spatial):
        raise InputError(
            f"FMix spatial shape {tuple(spatial)} is unsupported: use (L,) or (H, W), each >= 1."
        )
    if not (isinstance(decay_power, (int, float)) and decay_power > 0):
        raise ConfigError(
            f"decay_power={decay_power!r} is invalid: pass a positive number (FMix uses 3)."
        )
    device = torch.device(device) if device is not None else lam.device
    n = lam.reshape(-1).shape[0]
    freqs = _fourier_frequencies(spatial, generator.device)
    scale = 1.0 / freqs.clamp_min(1.0 / max(spatial)) ** decay_power
    noise = torch.randn((n, *freqs.shape, 2), generator=generator, device=generator.device,
                        dtype=torch.float64)
    spectrum = torch.complex(noise[..., 0], noise[..., 1]) * scale
    dims = tuple(range(1, len(spatial) + 1))
    grey = to_device(torch.fft.irfftn(spectrum, s=spatial, dim=dims), device)
    area = math.prod(spatial)
    flat = grey.reshape(n, area)
    # Rank of each element, largest first; the top round(lam * area) are kept.
    rank = torch.argsort(torch.argsort(flat, dim=1, descending=True), dim=1)
    keep = torch.round(lam.reshape(-1, 1).to(device=device, dtype=torch.float64) * area)
    return (rank >= keep).reshape(n, *spatial)


# ---------------------------------------------------------------------- boxes
def host_box_mask(
    spatial: tuple[int, ...], starts: tuple[int, ...], sizes: tuple[int, ...],
    device: torch.device | str | None = None,
) -> Tensor:
    """One boolean mask ``(1, *spatial)``, True inside the box given as host integers.

    Built on ``device`` by a fill, so no host data is copied and nothing synchronises.

    Example:
        >>> host_box_mask((4,), (1,), (2,)).tolist()
        [[False, True, True, False]]
    """
    mask = torch.zeros((1, *spatial), dtype=torch.bool, device=device)
    region = (0, *(slice(s, s + k) for s, k in zip(starts, sizes, strict=True)))
    mask[region] = True
    return mask


def box_mask(spatial: tuple[int, ...], starts: Tensor, sizes: Tensor) -> Tensor:
    """Boolean masks ``(N, *spatial)``, True inside the boxes ``[start, start + size)``.

    ``starts`` and ``sizes`` are int tensors ``(N, len(spatial))``; boxes are clipped at the
    border.

    Example:
        >>> box_mask((4,), torch.tensor([[1]]), torch.tensor([[2]])).tolist()
        [[False, True, True, False]]
    """
    n = starts.shape[0]
    mask = torch.ones((n, *spatial), dtype=torch.bool, device=starts.device)
    for axis, size in enumerate(spatial):
        pos = torch.arange(size, device=starts.device)
        lo = starts[:, axis : axis + 1]
        inside = (pos >= lo) & (pos < lo + sizes[:, axis : axis + 1])
        view = [n] + [1] * len(spatial)
        view[axis + 1] = size
        mask = mask & inside.reshape(view)
    return mask


def minmax_box(
    spatial: tuple[int, ...],
    n: int,
    minmax: tuple[float, float],
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """timm's ``cutmix_minmax`` box: each side an integer drawn uniformly from
    ``[floor(lo * size), floor(hi * size))`` independently per axis (at least 1), placed
    uniformly inside the image. Returns int64 ``(starts, sizes)``, each ``(n, len(spatial))``,
    on the generator's device; no lambda is drawn (the label weight is the kept area).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> starts, sizes = minmax_box((10, 20), 3, (0.2, 0.5), generator=g)
        >>> bool(((sizes[:, 0] >= 2) & (sizes[:, 0] < 5)).all())
        True
    """
    lo, hi = minmax
    if not (0.0 < lo < hi <= 1.0):
        raise ConfigError(
            f"minmax={minmax!r} is invalid: pass (lo, hi) with 0 < lo < hi <= 1, fractions of "
            "the side length (timm's cutmix_minmax)."
        )
    dev = generator.device
    bounds = [_minmax_sides(size, minmax) for size in spatial]
    u = torch.rand((n, len(spatial)), generator=generator, device=dev, dtype=torch.float64)
    sizes = torch.stack([torch.floor(low + u[:, a] * (high - low)).clamp(max=size)
                         for a, (size, (low, high)) in enumerate(zip(spatial, bounds,
                                                                      strict=True))], dim=1)
    u = torch.rand((n, len(spatial)), generator=generator, device=dev, dtype=torch.float64)
    room = torch.stack([size - sizes[:, a] + 1 for a, size in enumerate(spatial)], dim=1)
    return torch.floor(u * room).to(torch.int64), sizes.to(torch.int64)


def _minmax_sides(size: int, minmax: tuple[float, float]) -> tuple[int, int]:
    """The side range ``[low, high)`` of :func:`minmax_box` on an axis of ``size``."""
    low = max(math.floor(minmax[0] * size), 1)
    return low, max(math.floor(minmax[1] * size), low + 1)


def minmax_constant(spatial: tuple[int, ...] | None, minmax: tuple[float, float], *,
                    ndim: int = 2) -> float:
    """MixupE's ``c = 2 E[lam (1 - lam)]`` for :func:`minmax_box`'s boxes, in closed form.

    ``lam = 1 - prod_a k_a / n_a`` with the sides ``k_a`` independent and uniform on their
    integer ranges (boxes lie inside, so ``lam`` is exactly the kept area), hence
    ``c = 2 (prod_a E[k_a / n_a] - prod_a E[(k_a / n_a)^2])``. ``spatial=None`` gives the
    continuous limit for ``ndim`` axes, ``k / n ~ U(lo, hi)``.

    Example:
        >>> round(minmax_constant((32, 32), (0.2, 0.8)), 4)
        0.3154
    """
    lo, hi = minmax
    if spatial is None:
        first, second = (lo + hi) / 2, (lo * lo + lo * hi + hi * hi) / 3
        return 2.0 * (first**ndim - second**ndim)
    first = second = 1.0
    for size in spatial:
        low, high = _minmax_sides(size, minmax)
        sides = [min(k, size) / size for k in range(low, high)]
        first *= sum(sides) / len(sides)
        second *= sum(v * v for v in sides) / len(sides)
    return 2.0 * (first - second)


def resizemix_box(
    spatial: tuple[int, ...],
    scale: Tensor,
    *,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """ResizeMix's paste box: side ``max(1, round(scale * size))`` per axis, placed uniformly
    at random so that it lies inside the image. Returns int64 ``(starts, sizes)``, each of
    shape ``(N, len(spatial))`` for ``N`` = ``scale.numel()``, on the generator's device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> starts, sizes = resizemix_box((10, 10), torch.tensor([0.5]), generator=g)
        >>> sizes.tolist()
        [[5, 5]]
    """
    dev = generator.device
    scale64 = scale.reshape(-1).to(device=dev, dtype=torch.float64)
    sizes = torch.stack([torch.round(scale64 * n).clamp(1, n) for n in spatial], dim=1)
    u = torch.rand(sizes.shape, generator=generator, device=dev, dtype=torch.float64)
    room = torch.stack([n - sizes[:, a] + 1 for a, n in enumerate(spatial)], dim=1)
    return torch.floor(u * room).to(torch.int64), sizes.to(torch.int64)


def paste_resized(
    x: Tensor,
    partner: Tensor,
    starts: tuple[int, ...],
    sizes: tuple[int, ...],
    layout: Layout,
    *,
    mode: str = "nearest",
) -> Tensor:
    """Paste ``partner`` resized to ``sizes`` into ``x`` at ``starts`` (one box, every sample).

    ``mode`` is an interpolation mode of :func:`torch.nn.functional.interpolate`: "nearest"
    (ResizeMix's reference setting), or "bilinear"/"linear" (by the number of spatial dims).
    The box sizes and places are host integers, so this does not synchronise.

    Example:
        >>> lay = layout_of(torch.zeros(1, 1, 4), method="doc")
        >>> paste_resized(torch.zeros(1, 1, 4), torch.arange(4.).reshape(1, 1, 4), (1,), (2,),
        ...               lay).tolist()
        [[[0.0, 0.0, 2.0, 0.0]]]
    """
    src = layout.to_channels_first(partner)
    if mode == "linear" or mode == "bilinear":
        mode = "linear" if len(sizes) == 1 else "bilinear"
        small = F.interpolate(src, size=sizes, mode=mode, align_corners=False)
    elif mode == "nearest":
        small = F.interpolate(src, size=sizes, mode="nearest")
    else:
        raise ConfigError(f"mode={mode!r} is unknown: use 'nearest' or 'bilinear'.")
    out = layout.to_channels_first(x).clone()
    region = (slice(None), slice(None), *(
        slice(s, s + k) for s, k in zip(starts, sizes, strict=True)
    ))
    out[region] = small.to(out.dtype)
    return layout.from_channels_first(out)


def puzzle_adversarial_noise(
    start: Tensor, grad: Tensor, *, eps: float, step: float, coef: Tensor | float
) -> Tensor:
    """Puzzle Mix's adversarial noise: ``coef * clamp(start + step * sign(grad), -eps, eps)``.

    ``start`` is the random start (uniform in ``[-eps, eps]``), ``grad`` the loss gradient at
    ``x + start``, ``coef`` a 0-d or broadcastable draw from U(0, 1) that scales the noise
    down at random (all as in the released code, in the input's own units).

    Example:
        >>> noise = puzzle_adversarial_noise(torch.tensor([0.05, -0.05]), torch.tensor([1.0, 1.0]),
        ...                                  eps=0.1, step=0.12, coef=0.5)
        >>> [round(v, 4) for v in noise.tolist()]
        [0.05, 0.035]
    """
    return coef * torch.clamp(start + step * torch.sign(grad), -eps, eps)
