"""What the saliency-guided mixers (Puzzle Mix, Co-Mixup) share: the input-gradient saliency,
block pooling, and their base class (grid sizes, layout, solver).

Both take the saliency of each input from a backward pass of the model on the clean batch
(``sqrt(mean over channels of (dL/dx)^2)``, computed in eval mode so BatchNorm statistics
are not touched, without accumulating parameter gradients), pool it over a grid of blocks
drawn per step, and choose the mask by graph cuts (:mod:`mixupe.functional.cuts`, solved by
the ``PyMaxflow`` package). The cuts run on the host, so these mixers synchronise with the
device once per step and cost a backward pass more than Mixup. They work on images
``(B, C, H, W)``, signals ``(B, C, L)`` and, with ``channels_last=True``, sequences
``(B, L, D)``; the grid sizes must divide the spatial sizes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.functional import cuts as MC
from mixupe.functional import masks as MM
from mixupe.functional import transport as MT
from mixupe.objectives.masked import spatial_layout
from mixupe.objectives.mixer import Mixer

__all__ = ["input_gradient"]


def _autocast_off(device: torch.device) -> Any:
    """A context without autocast on ``device`` (a no-op where autocast does not apply)."""
    try:
        return torch.autocast(device_type=device.type, enabled=False)
    except RuntimeError:  # pragma: no cover - a device type autocast does not know
        return contextlib.nullcontext()


def input_gradient(
    model: nn.Module, x: Tensor, targets: Tensor, *, train: bool = False
) -> Tensor:
    """The gradient of the *summed* soft cross-entropy with respect to the inputs ``x``.

    The model runs in eval mode, or in train mode with ``train=True`` (its mode is restored;
    train mode updates BatchNorm running statistics, as the Co-Mixup release's saliency pass
    does). Only the input gradient is taken, so parameter ``.grad`` does not change. Autocast
    is switched off for this pass and the loss is summed rather than averaged, so half
    precision cannot flush the small per-pixel gradients to zero; the saliency mixers
    normalise the map per sample, so the scale does not matter to them.

    Example:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> input_gradient(net, torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).shape
        torch.Size([1, 2])
    """
    was_training = model.training
    model.train(train)
    try:
        with torch.enable_grad(), _autocast_off(x.device):
            x_req = x.detach().requires_grad_(True)
            loss = MF.soft_cross_entropy(model(x_req), targets, reduction="sum")
            (grad,) = torch.autograd.grad(loss, x_req)
    finally:
        model.train(was_training)
    return grad


def _block_mean(t: Tensor, grid: tuple[int, ...]) -> Tensor:
    """``(B, *spatial)`` -> ``(B, *grid)`` block means (average pooling, as released)."""
    spatial = tuple(t.shape[1:])
    if any(s % n for s, n in zip(spatial, grid, strict=True)):
        return MT.to_blocks(t.unsqueeze(1), grid).flatten(2).mean(-1).reshape(t.shape[0], *grid)
    kernel = tuple(s // n for s, n in zip(spatial, grid, strict=True))
    pool = F.avg_pool1d if len(grid) == 1 else F.avg_pool2d
    return pool(t.unsqueeze(1), kernel).squeeze(1)


def _normalised(t: Tensor) -> Tensor:
    """Each sample's map divided by its sum (the releases' normalisation)."""
    total = t.reshape(t.shape[0], -1).sum(1).clamp_min(torch.finfo(t.dtype).tiny)
    return t / total.reshape(-1, *[1] * (t.dim() - 1))


def _upsample(t: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """``(B, *grid)`` -> ``(B, *spatial)`` by repeating each block value over its block."""
    out = t
    for axis, size in enumerate(spatial):
        out = out.repeat_interleave(size // t.shape[axis + 1], dim=axis + 1)
    return out


def _keep_format(out: Tensor, like: Tensor) -> Tensor:
    """``out`` in ``like``'s memory format (channels_last inputs give channels_last outputs)."""
    if like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last
    ):
        return out.contiguous(memory_format=torch.channels_last)
    return out


def _check_float(x: Any, method: str) -> None:
    if isinstance(x, Tensor) and not x.is_floating_point():
        raise InputError(
            f"{method} takes its saliency from the input gradient, so inputs must be floating "
            f"point, got {x.dtype}: convert the batch first, e.g. x.float() / 255 for uint8 "
            "images (then pass mean=/std= if you also normalise)."
        )


class _GridMixer(Mixer):
    """Options shared by the saliency-guided mixers: grid sizes, layout, saliency, solver."""

    needs_targets = True

    def __init__(
        self,
        *,
        grid_sizes: Sequence[int],
        spatial_dims: int | None,
        channels_last: bool,
        solver: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(grid_sizes, int) or not grid_sizes or not all(
            isinstance(n, int) and n >= 1 for n in grid_sizes
        ):
            raise ConfigError(
                f"grid_sizes={grid_sizes!r} is invalid: pass positive ints, the numbers of "
                "blocks per side to draw from, e.g. (2, 4, 8, 16)."
            )
        self.grid_sizes = tuple(int(n) for n in grid_sizes)
        self.spatial_dims = spatial_dims
        self.channels_last = bool(channels_last)
        self.solver = MC.check_solver(solver)

    def _layout(self, x: Any) -> MM.Layout:
        _check_float(x, type(self).__name__)
        return spatial_layout(x, spatial_dims=self.spatial_dims,
                              channels_last=self.channels_last, method=type(self).__name__)

    def _grid(self, layout: MM.Layout, grid: int | None, generator: torch.Generator) -> int:
        fits = [n for n in self.grid_sizes if all(s % n == 0 for s in layout.spatial)]
        if grid is not None:
            fits = [grid] if all(s % grid == 0 for s in layout.spatial) else []
        if not fits:
            raise ConfigError(
                f"no grid of {grid or self.grid_sizes} blocks per side tiles inputs of spatial "
                f"shape {layout.spatial}: pass grid_sizes (blocks per side) that divide every "
                "spatial size, e.g. grid_sizes=(2, 4, 7) for 28 x 28 images."
            )
        if len(fits) == 1:
            return fits[0]
        # drawn where the generator lives; reading it is free for a CPU generator
        index = int(torch.randint(len(fits), (1,), generator=generator, device=generator.device))
        return fits[index]

    @staticmethod
    def _saliency(grad: Tensor, layout: MM.Layout) -> Tensor:
        g = layout.to_channels_first(grad)
        return torch.sqrt((g * g).mean(1))


def _grid_of(mask: Any, layout: MM.Layout, batch_size: int) -> int:
    if not isinstance(mask, Tensor) or mask.dim() != len(layout.spatial) + 1 or (
        mask.shape[0] != batch_size or len(set(mask.shape[1:])) != 1
    ):
        shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
        raise InputError(
            f"mask of shape {shape} is invalid: pass the partner's weight per block, shape "
            f"({batch_size}, n{', n' * (len(layout.spatial) - 1)}) for an n-block grid."
        )
    return int(mask.shape[1])
