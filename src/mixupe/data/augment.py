"""Training-time augmentation of image batches, on the batch's device.

``crop_flip`` is the CIFAR augmentation of the Mixup literature (the mixup paper's and MixupE's
CIFAR code: torchvision's ``RandomCrop(32, padding=4)`` then ``RandomHorizontalFlip()``,
before ``ToTensor`` and ``Normalize``): each image is padded by ``padding`` pixels of black on
every side, a window of the original size is cut at a uniformly drawn offset, and the window
is mirrored left-right with probability 1/2. Here it runs on standardised batches, so "black"
is the standardised value of a 0 pixel, ``-mean / std`` per channel (``fill=``).

The draws (two offsets and a coin per image) come from ``generator`` on the host, so a run
repeats and resumes exactly on CPU and on CUDA.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> g = torch.Generator().manual_seed(0)
    >>> out = crop_flip(x, padding=1, generator=g)
    >>> out.shape
    torch.Size([1, 1, 4, 4])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mixupe._transfer import to_device
from mixupe.errors import ConfigError, InputError

__all__ = ["crop_flip"]


def crop_flip(
    x: Tensor,
    *,
    padding: int = 4,
    flip: bool = True,
    fill: float | Sequence[float] | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Random crops of ``padding``-padded images and random horizontal flips, per image.

    Args:
        x: images ``(B, C, H, W)``, floating point.
        padding: pixels added on each side before cropping back to ``H x W`` (0: no crop).
        flip: mirror each image left-right (the last axis) with probability 1/2.
        fill: the padding value, one number or one per channel (``None``: 0).
        generator: a CPU generator for the draws (``None``: the global one).

    Returns:
        A new tensor of the shape, dtype and device of ``x``.
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise InputError(
            f"crop_flip takes floating-point images (B, C, H, W), got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
            f"{'' if not isinstance(x, Tensor) else ' ' + str(x.dtype)}: augment 2-D image "
            "batches only (set augment='none' for other data).")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise ConfigError(f"padding={padding!r} must be an int >= 0 (pixels per side)")
    b, c, h, w = x.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    offsets = torch.randint(2 * padding + 1, (b, 2), generator=generator, device=gen_device)
    coins = torch.rand(b, generator=generator, device=gen_device) < 0.5
    # one copy of all the draws to the batch's device: (dy, dx, flip) per image
    draws = to_device(torch.cat([offsets, coins[:, None].long()], 1), x.device)
    offsets, coins = draws[:, :2], draws[:, 2].bool()
    fill_t = torch.zeros(c, dtype=x.dtype) if fill is None else torch.as_tensor(
        fill, dtype=x.dtype).reshape(-1)
    if fill_t.numel() not in (1, c):
        raise ConfigError(f"fill has {fill_t.numel()} values but the images have {c} channels: "
                          "pass one number or one per channel")
    fill_t = fill_t.to(x.device).expand(c)  # no copy for a fill already on the device
    padded = fill_t.reshape(1, c, 1, 1).expand(b, c, h + 2 * padding, w + 2 * padding).clone()
    padded[:, :, padding:padding + h, padding:padding + w] = x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (B, H)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)  # (B, W)
    if flip:
        cols = torch.where(coins[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous(memory_format=_memory_format(x))


def _memory_format(x: Tensor) -> torch.memory_format:
    return (torch.channels_last if x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous() else torch.contiguous_format)
