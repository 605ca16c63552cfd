"""Pure tensor functions that draw and apply the masks and boxes of the model-free mixers.

FMix (Fourier-noise masks), ResizeMix (a shrunken partner pasted in), SaliencyMix (a box
centred on the peak of a fine-grained or spectral-residual saliency map) and the shared layout
helpers. The same
conventions as :mod:`mixupe.functional`: every random draw takes an explicit
:class:`torch.Generator`; nothing synchronises with the device except where a docstring says
so; inputs are never modified in place.

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


# ---------------------------------------------------------------------- saliency
def _mean_filter(t: Tensor, size: int) -> Tensor:
    """Average over a ``size``-wide window per spatial axis, replicating the border."""
    sd = t.dim() - 1
    pad = size // 2
    x = t.unsqueeze(1)
    x = F.pad(x, [pad, size - 1 - pad] * sd, mode="replicate")
    kernel = torch.full((1, 1) + (size,) * sd, 1.0 / size**sd, dtype=t.dtype, device=t.device)
    conv = F.conv1d if sd == 1 else F.conv2d
    return conv(x, kernel).squeeze(1)


def _gaussian_blur(t: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur (radius 3 sigma, border replicated) over the spatial axes."""
    if sigma <= 0:
        return t
    radius = max(1, math.ceil(3 * sigma))
    grid = torch.arange(-radius, radius + 1, dtype=t.dtype, device=t.device)
    w = torch.exp(-(grid**2) / (2 * sigma**2))
    w = w / w.sum()
    out = t
    for axis in range(1, t.dim()):
        moved = out.movedim(axis, -1)
        shape = moved.shape
        flat = F.pad(moved.reshape(-1, 1, shape[-1]), [radius, radius], mode="replicate")
        moved = F.conv1d(flat, w.reshape(1, 1, -1)).reshape(shape)
        out = moved.movedim(-1, axis)
    return out


def spectral_residual_saliency(
    x: Tensor, layout: Layout, *, filter_size: int = 3, blur: float = 0.125
) -> Tensor:
    """Spectral-residual saliency (Hou & Zhang 2007), per sample, shape ``(B, *spatial)``.

    Channels are averaged; ``A = log |FFT|``; the residual ``A - mean_filter(A)`` (window
    ``filter_size``) is recombined with the phase and transformed back; the squared magnitude
    is blurred with a Gaussian of ``sigma = blur * max(spatial)`` (Hou & Zhang's 8 px at
    64 px), computed in float64 at the input's resolution. Works for 1-D and 2-D layouts.

    Example:
        >>> x = torch.zeros(1, 1, 16)
        >>> x[0, 0, 5] = 1.0
        >>> lay = layout_of(x, method="doc")
        >>> int(spectral_residual_saliency(x, lay, blur=0).argmax())
        5
    """
    grey = layout.to_channels_first(x.detach()).to(torch.float64).mean(1)
    dims = tuple(range(1, grey.dim()))
    spectrum = torch.fft.fftn(grey, dim=dims)
    log_amp = torch.log(spectrum.abs().clamp_min(1e-12))
    residual = log_amp - _mean_filter(log_amp, filter_size)
    back = torch.fft.ifftn(torch.exp(torch.complex(residual, torch.angle(spectrum))), dim=dims)
    sal = back.abs() ** 2
    return _gaussian_blur(sal, blur * max(layout.spatial))


# ---------------------------------------------------------------------- fine-grained saliency
_NEIGHBOURHOODS = (12, 24, 48, 28, 56, 112)  # Montabone & Soto's six surround half-widths


def _to_grey8(x: Tensor) -> Tensor:
    """``(N, C, *spatial)`` -> 8-bit grey levels ``(N, H, W)`` as int64 (1-D: ``H = 1``).

    uint8 inputs are used as they are; float images within [0, 1] are scaled by 255, any
    other image is mapped onto [0, 255] by its own minimum and maximum; then rounded. Three
    channels are weighted as OpenCV's ``COLOR_BGR2GRAY`` weighs them in fixed point (15 bits,
    OpenCV 4 and 5), channel 0 taken as blue (the authors pass RGB arrays to it, so red gets
    0.114); one channel is used as it is; other channel counts are averaged.
    """
    if x.dtype == torch.uint8:
        levels = x.to(torch.int64)
    else:
        v = x.detach().to(torch.float64)
        flat = v.reshape(v.shape[0], -1)
        shape = (-1, *([1] * (v.dim() - 1)))
        lo, hi = flat.amin(1).reshape(shape), flat.amax(1).reshape(shape)
        unit = (lo >= 0) & (hi <= 1)  # [0, 1] images (ToTensor): the levels they came from
        lo = torch.where(unit, 0.0, lo)
        span = torch.where(unit, 1.0, (hi - lo).clamp_min(1e-300))
        levels = torch.round((v - lo) / span * 255).to(torch.int64)
    if levels.shape[1] == 3:
        b, g, r = levels.unbind(1)
        grey = (b * 3735 + g * 19235 + r * 9798 + 16384) >> 15
    elif levels.shape[1] == 1:
        grey = levels[:, 0]
    else:
        grey = torch.round(levels.to(torch.float64).mean(1)).to(torch.int64)
    return grey if grey.dim() == 3 else grey.unsqueeze(1)


def _blur_121(grey: Tensor) -> Tensor:
    """OpenCV's 8-bit ``GaussianBlur(ksize=3, sigma=0)``: [1, 2, 1] per axis, reflect-101
    border, rounded half up (bit-exact)."""
    def along(t: Tensor, dim: int) -> Tensor:
        n = t.shape[dim]
        if n == 1:
            return 4 * t
        idx = torch.arange(-1, n + 1, device=t.device).abs()
        idx = torch.where(idx > n - 1, 2 * (n - 1) - idx, idx)
        p = t.index_select(dim, idx)
        return p.narrow(dim, 0, n) + 2 * p.narrow(dim, 1, n) + p.narrow(dim, 2, n)

    return (along(along(grey, 2), 1) + 8) >> 4


def _centre_surround(grey: Tensor, integral: Tensor, half: int) -> tuple[Tensor, Tensor]:
    """On and off responses at one scale: the pixel minus the mean of its surround (the
    ``2 half`` window containing it, border-clipped, the pixel itself left out) and the reverse,
    truncated to 8 bits in float32 arithmetic as OpenCV's implementation does."""
    h, w = grey.shape[1:]
    dev = grey.device

    def bounds(n: int) -> tuple[Tensor, Tensor]:
        pos = torch.arange(n, device=dev)
        return (pos - half + 1).clamp(0, n), (pos + half + 1).clamp(0, n)

    y1, y2 = bounds(h)
    x1, x2 = bounds(w)

    def corner(ys: Tensor, xs: Tensor) -> Tensor:
        return integral[:, ys][:, :, xs]

    total = corner(y2, x2) + corner(y1, x1) - corner(y2, x1) - corner(y1, x2)
    count = ((y2 - y1)[:, None] * (x2 - x1)[None, :] - 1).to(torch.float32)
    mean = (total - grey).to(torch.float32) / count
    centre = grey.to(torch.float32)
    on = torch.trunc(torch.clamp_min(centre - mean, 0)).to(torch.int64)
    off = torch.trunc(torch.clamp_min(mean - centre, 0)).to(torch.int64)
    return on, off


def _rescale_255(t: Tensor, peak: Tensor) -> Tensor:
    """``trunc(255 * float32(t / peak))`` per image (0 where the peak is 0)."""
    ratio = t.to(torch.float32) / peak.to(torch.float32).clamp_min(1).reshape(-1, 1, 1)
    return torch.trunc(255.0 * ratio.to(torch.float64)).to(torch.int64)


def fine_grained_saliency(x: Tensor, layout: Layout) -> Tensor:
    """Montabone & Soto's (2010) fine-grained static saliency, per sample ``(B, *spatial)``.

    The computation of OpenCV's ``saliency.StaticSaliencyFineGrained`` (which SaliencyMix's
    authors call), in integer and float32 arithmetic as that implementation does: the 8-bit
    grey image (see below) is smoothed twice by a 3x3 Gaussian; at six surround sizes
    (half-widths 12, 24, 48, 28, 56, 112 px, clipped at the border) the centre-surround
    differences "on" (brighter than the surround mean) and "off" (darker) are taken; each is
    summed over the scales and scaled to [0, 255] by its maximum; the saliency is
    ``255 (on + off) / max(max on, max off)``, which can exceed 255 where a pixel is both
    (OpenCV wraps such values modulo 256; so does this). Integer levels ``(B, *spatial)``
    (int64) are returned; the peak is their first maximum in row-major order.

    uint8 inputs are taken as the 8-bit image, float images within [0, 1] as ``255 x``, and
    other inputs (normalised images) are mapped per image onto [0, 255] by their minimum and
    maximum (the authors hand normalised float32 arrays to OpenCV, whose implementation is
    written for 8-bit images and returns another map for them: see docs/FIDELITY.md).
    Three channels are combined as ``COLOR_BGR2GRAY`` combines them, with channel 0 as blue,
    as in the authors' call on RGB arrays. 1-D layouts are treated as images of height 1.
    On the input's device, without synchronising.

    Example:
        >>> x = torch.zeros(1, 1, 40, 40, dtype=torch.uint8)
        >>> x[0, 0, 10:14, 25:29] = 200
        >>> lay = layout_of(x, method="doc")
        >>> sal = fine_grained_saliency(x, lay)   # the patch is salient, the background less
        >>> int(sal[0, 11, 26]), int(sal[0, 30, 5])
        (255, 107)
    """
    grey = _blur_121(_blur_121(_to_grey8(layout.to_channels_first(x))))
    n, h, w = grey.shape
    integral = torch.zeros((n, h + 1, w + 1), dtype=torch.int64, device=grey.device)
    integral[:, 1:, 1:] = grey.cumsum(1).cumsum(2)
    on = torch.zeros_like(grey)
    off = torch.zeros_like(grey)
    for half in _NEIGHBOURHOODS:
        on_s, off_s = _centre_surround(grey, integral, half)
        on = on + on_s
        off = off + off_s
    on = _rescale_255(on, on.reshape(n, -1).amax(1))
    off = _rescale_255(off, off.reshape(n, -1).amax(1))
    peak = torch.maximum(on.reshape(n, -1).amax(1), off.reshape(n, -1).amax(1))
    peak = peak.to(torch.float64).clamp_min(1).reshape(-1, 1, 1)
    sal = torch.trunc((on + off).to(torch.float64) * 255.0 / peak).to(torch.int64) % 256
    return sal.reshape(n, *layout.spatial)


def peak_box(saliency: Tensor, lam: Tensor) -> tuple[Tensor, Tensor]:
    """SaliencyMix's box around each map's peak (its first maximum in row-major order).

    With ``cut = floor(sqrt(1 - lam) * size)`` per axis in 2-D (``floor((1 - lam) * size)``
    in 1-D), the box is ``[peak - cut // 2, peak + cut // 2)`` clipped at the border, so its
    side before clipping is ``2 floor(cut / 2)``, as in the authors' code. ``saliency`` is
    ``(N, *spatial)``; ``lam`` is 0-d or ``(N,)``. Returns int64 ``(starts, sizes)`` of the
    clipped boxes, each ``(N, len(spatial))``, on the saliency's device (nothing is built on
    the host, nothing synchronises).

    Example:
        >>> s = torch.zeros(1, 6, 6); s[0, 1, 4] = 1.0
        >>> starts, sizes = peak_box(s, torch.tensor(0.75))
        >>> starts.tolist(), sizes.tolist()
        ([[0, 3]], [[2, 2]])
    """
    n = saliency.shape[0]
    spatial = tuple(saliency.shape[1:])
    flat_peak = saliency.reshape(n, -1).argmax(1)
    ratio = 1.0 - lam.reshape(-1).to(device=saliency.device, dtype=torch.float64)
    ratio = ratio.clamp(0.0, 1.0).expand(n)
    if len(spatial) == 2:
        ratio = ratio.sqrt()
    starts, sizes = [], []
    for axis in range(len(spatial) - 1, -1, -1):
        size = spatial[axis]
        centre = flat_peak % size
        flat_peak = flat_peak // size
        half = torch.floor(ratio * size).to(torch.int64) // 2
        lo = (centre - half).clamp(0, size)
        hi = (centre + half).clamp(0, size)
        starts.append(lo)
        sizes.append(hi - lo)
    return torch.stack(starts[::-1], dim=1), torch.stack(sizes[::-1], dim=1)


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
