"""SaliencyMix's saliency maps and its box around their peak.

- :func:`spectral_residual_saliency` (Hou & Zhang 2007), cheap, any 1-D or 2-D layout;
- :func:`fine_grained_saliency`, OpenCV's ``StaticSaliencyFineGrained`` (Montabone & Soto
  2010) written in torch, the authors' choice;
- :func:`peak_box`, the box centred on a map's peak.

The functions take a :class:`~mixupe.functional.masks.Layout` and are exported by
:mod:`mixupe.functional.masks` too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from mixupe.functional.masks import Layout

__all__ = ["fine_grained_saliency", "peak_box", "spectral_residual_saliency"]


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
        >>> from mixupe.functional.masks import layout_of
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
        >>> from mixupe.functional.masks import layout_of
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
