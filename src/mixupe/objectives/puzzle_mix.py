"""Puzzle Mix (Kim et al., ICML 2020): a saliency-guided mask by graph cuts, with transport.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe.errors import ConfigError, InputError
from mixupe.functional import cuts as MC
from mixupe.functional import masks as MM
from mixupe.functional import transport as MT
from mixupe.objectives.base import MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.saliency_guided import (
    _block_mean,
    _grid_of,
    _GridMixer,
    _keep_format,
    _normalised,
    _upsample,
    input_gradient,
)

__all__ = ["PuzzleMix"]


def _channel_stats(value: Any, name: str) -> Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if t.numel() == 0 or not bool(torch.isfinite(t).all()) or (name == "std" and bool(
        (t <= 0).any()
    )):
        raise ConfigError(f"{name}={value!r} is invalid: pass a finite float or one per channel"
                          f"{' (> 0)' if name == 'std' else ''}, the inputs' normalisation.")
    return t


class PuzzleMix(_GridMixer):
    """Puzzle Mix (Kim et al., ICML 2020): a saliency-aware mask from a graph cut, optimal
    transport of blocks, and optional adversarial noise.

    Per step, as released: a grid of ``n x n`` blocks (``n`` drawn from ``grid_sizes`` among
    those that divide the image), ``lam ~ Beta(alpha, alpha)``, the pairing ``perm``; the
    input gradient of the clean loss (eval mode) gives each block its saliency, normalised
    to sum 1 per sample; for each pair a mask with ``n_labels`` levels (``x`` weight 1, 1/2,
    0 for 3 labels) minimises :func:`mixupe.functional.cuts.puzzle_energies` (saliency lost,
    smoothness ``beta``, data-local smoothness ``gamma`` on inputs average-pooled over
    ``neigh_size`` pixels, label prior ``eta`` towards ``lam``) by graph cuts
    (``solver='gco'``: the authors' GCO alpha-beta swap, ``pip install gco-wrapper``;
    ``'maxflow'``: this package's PyMaxflow swap). With ``transport=True`` each source's
    blocks are then re-arranged at the grid of ``t_size``-pixel blocks (``None``: the mask's
    grid, the release's default ``-1``) to minimise ``t_eps`` times the squared block
    distance less the normalised saliency moved into the region where that source shows,
    and the two are blended by the mask. The label weight of ``x`` is the exact mean of its
    mask.

    Units: the seam term compares pixels in [0, 1], as the release does after undoing the
    normalisation. Pass the inputs' normalisation ``mean=`` and ``std=`` (a float or one per
    channel, e.g. CIFAR's) so ``x * std + mean`` is in [0, 1]; by default the inputs are taken
    to be in [0, 1] already.

    Deviation: the transport is solved exactly (network simplex, POT); the release uses an
    iterative heuristic that can leave blocks without a source (see docs/FIDELITY.md).

    Adversarial option (``adv_p > 0``): with probability ``adv_p`` each of the two sources gets
    noise ``coef * clamp(u + adv_step * sign(grad), -adv_eps, adv_eps)`` (``u`` a uniform random
    start in ``[-adv_eps, adv_eps]`` at which the saliency gradient is taken, ``coef ~ U(0, 1)``),
    in the input's own units (the release works in [0, 1] pixel units with ``adv_eps = 10/255``
    and clips to that range: pass ``clip=(lo, hi)`` in your input units for that).

    ``mask=`` (the partner's weight per block, ``(B, *grid)``, values in [0, 1]) with
    ``perm=`` skips the cut and makes the step deterministic when ``transport=False`` and
    ``adv_p=0``. Outputs keep a ``channels_last`` input's memory format.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> pm = PuzzleMix(num_classes=3, grid_sizes=(2, 4), seed=0, solver="maxflow")
        >>> out = pm(net, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> bool(torch.allclose(out.lam, 1 - out.mask.flatten(1).mean(1)))
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        per_sample: bool = False,
        grid_sizes: Sequence[int] = (2, 4, 8, 16),
        n_labels: int = 3,
        beta: float = 1.2,
        gamma: float = 0.5,
        eta: float = 0.2,
        neigh_size: int = 4,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        transport: bool = True,
        t_eps: float = 0.8,
        t_size: int | None = None,
        solver: str = "gco",
        adv_p: float = 0.0,
        adv_eps: float = 10.0 / 255.0,
        adv_step: float | None = None,
        clip: tuple[float, float] | None = None,
        spatial_dims: int | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, per_sample=per_sample, grid_sizes=grid_sizes,
                         spatial_dims=spatial_dims, channels_last=channels_last, solver=solver,
                         num_classes=num_classes, label_smoothing=label_smoothing, seed=seed,
                         generator=generator, validate=validate, check_finite=check_finite)
        self.n_labels = check.integer(n_labels, "n_labels", minimum=2, hint="(3 released)")
        self.beta, self.gamma, self.eta, self.t_eps, self.adv_eps = (
            check.non_negative(value, name) for name, value in (
                ("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps),
                ("adv_eps", adv_eps)))
        self.neigh_size = check.integer(neigh_size, "neigh_size", minimum=1,
                                        what="a block side in pixels")
        self.t_size = check.integer(t_size, "t_size", minimum=1, what="a block side in pixels",
                                    none=True)
        self.adv_p = check.interval(adv_p, "adv_p", 0.0, 1.0, hint="(a probability)")
        if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
            raise ConfigError(f"clip={clip!r} is invalid: pass (low, high) with low < high.")
        self.mean, self.std = _channel_stats(mean, "mean"), _channel_stats(std, "std")
        self.transport = bool(transport)
        self.adv_step = float(adv_step) if adv_step is not None else 1.2 * self.adv_eps
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def pixels(self, x_cf: Tensor) -> Tensor:
        """``(B, C, *spatial)`` inputs in [0, 1] pixel units: ``x * std + mean``."""
        shape = (1, -1, *[1] * (x_cf.dim() - 2))
        out = x_cf.double()
        if self.std is not None:
            out = out * self.std.to(out.device).reshape(shape)
        if self.mean is not None:
            out = out + self.mean.to(out.device).reshape(shape)
        return out

    def sample_mask(
        self, saliency: Tensor, lam: Tensor, perm: Tensor, x_cf: Tensor, grid: tuple[int, ...]
    ) -> Tensor:
        """The partner's weight per block, ``(B, *grid)``: the energies of all pairs are built
        on the device, copied to the host at once, and cut pair by pair."""
        pix = self.pixels(x_cf)
        unary, weights, pairwise = MC.puzzle_energies(
            saliency, saliency[perm], lam, n_labels=self.n_labels, beta=self.beta,
            gamma=self.gamma, eta=self.eta, x_self=pix, x_partner=pix[perm],
            neigh_size=self.neigh_size)
        b = saliency.shape[0]
        sizes = [unary[0].numel()] + [w[0].numel() for w in weights]
        host = torch.cat([unary.reshape(b, -1)] + [w.reshape(b, -1) for w in weights], 1).cpu()
        parts = torch.split(host, sizes, dim=1)
        shapes = [unary.shape[1:]] + [w.shape[1:] for w in weights]
        pw = pairwise.cpu().numpy()
        levels = 1.0 - np.arange(self.n_labels) / (self.n_labels - 1)
        out = np.empty((b, *grid))
        for i in range(b):
            u, *ws = (part[i].reshape(shape).numpy() for part, shape in zip(parts, shapes,
                                                                              strict=True))
            out[i] = 1.0 - levels[MC.puzzle_labeling(u, ws, pw, solver=self.solver)]
        return torch.from_numpy(out).to(device=saliency.device, dtype=saliency.dtype)

    def _transport_grid(self, spatial: tuple[int, ...], grid: tuple[int, ...]) -> tuple[int, ...]:
        if self.t_size is None or any(s // n <= self.t_size for s, n in zip(spatial, grid,
                                                                             strict=True)):
            return grid
        if any((s // n) % self.t_size for s, n in zip(spatial, grid, strict=True)):
            raise ConfigError(f"t_size={self.t_size} does not divide the blocks of a {grid} grid "
                              f"on {spatial} inputs: pass a t_size that divides every block side.")
        return tuple(s // self.t_size for s in spatial)

    def _sources(
        self, pixel_sal: Tensor, weight_partner: Tensor, perm: Tensor, layout: MM.Layout,
        grid: tuple[int, ...],
    ) -> tuple[tuple[Tensor, Tensor], tuple[int, ...]]:
        t_grid = self._transport_grid(layout.spatial, grid)
        sal = _normalised(_block_mean(pixel_sal, t_grid))
        region = _upsample(weight_partner, t_grid) if t_grid != grid else weight_partner
        return (MT.block_transport(sal, region < 1, t_eps=self.t_eps),
                MT.block_transport(sal[perm], region > 0, t_eps=self.t_eps)), t_grid

    def _noise(self, x: Tensor, generator: torch.Generator) -> tuple[list[bool], Tensor | None]:
        adv = [False, False]
        if self.adv_p > 0:
            draws = torch.rand(2, generator=generator, device=generator.device)
            adv = [bool(v) for v in (draws < self.adv_p).tolist()]
        if not any(adv):
            return adv, None
        u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
        return adv, ((2 * u - 1) * self.adv_eps).to(x.device)

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
        targets: Tensor,
        mask: Tensor | None = None,
        grid: int | None = None,
    ) -> MixPlan:
        """Saliency, mask, transport and noise for one step (see the class docstring)."""
        layout = self._layout(x)
        if mask is not None:
            grid = _grid_of(mask, layout, batch_size)
            _check_weights(mask)
        n = self._grid(layout, grid, generator)
        grid_shape = (n,) * len(layout.spatial)
        lam_t, perm_t = self._lam_perm(batch_size, device=device, dtype=dtype, lam=lam,
                                       perm=perm, generator=generator)
        adv, start = self._noise(x, generator)
        grad = input_gradient(model, x if start is None else x + start, targets)
        noise = None
        if start is not None:
            coef = torch.rand((), generator=generator, device=generator.device).to(device)
            noise = MM.puzzle_adversarial_noise(start, grad, eps=self.adv_eps,
                                                step=self.adv_step, coef=coef.to(x.dtype))
        pixel_sal = self._saliency(grad, layout)
        saliency = _normalised(_block_mean(pixel_sal, grid_shape))
        if mask is None:
            weight_partner = self.sample_mask(saliency, lam_t, perm_t,
                                              layout.to_channels_first(x.detach()), grid_shape)
        else:
            weight_partner = mask.to(device=device, dtype=saliency.dtype)
        sources, t_grid = None, grid_shape
        if self.transport:
            sources, t_grid = self._sources(pixel_sal, weight_partner, perm_t, layout, grid_shape)
        pixel = _upsample(weight_partner, layout.spatial).unsqueeze(1)
        lam_eff = (1.0 - weight_partner.reshape(batch_size, -1).mean(1)).to(dtype)
        mix = _blend(layout, perm_t, pixel, noise=noise, adv=adv, clip=self.clip,
                     sources=sources, t_grid=t_grid)
        return MixPlan(lam=lam_eff, perm=perm_t, layer=INPUT_LAYER, mix=mix,
                       mask=pixel.squeeze(1))


def _blend(layout: MM.Layout, perm_t: Tensor, pixel: Tensor, *, noise: Tensor | None,
           adv: list[bool], clip: tuple[float, float] | None, sources: Any,
           t_grid: tuple[int, ...]) -> Callable[[Tensor], Tensor]:
    """The step's mixing function: noise on the chosen sources (clipped), their blocks moved
    by the transport, then the two blended by the pixel mask (the partner's weight)."""

    def mix(t: Tensor) -> Tensor:
        tc = layout.to_channels_first(t)
        first, second = tc, tc[perm_t]
        if noise is not None:
            nc = layout.to_channels_first(noise).to(t.dtype)
            if adv[0]:
                first = first + nc
            if adv[1]:
                second = second + nc[perm_t]
            if clip is not None:
                first, second = first.clamp(*clip), second.clamp(*clip)
        if sources is not None:
            first = MT.move_blocks(first, sources[0], t_grid)
            second = MT.move_blocks(second, sources[1], t_grid)
        w = pixel.to(t.dtype)
        return _keep_format(layout.from_channels_first(first * (1 - w) + second * w), t)

    return mix


def _check_weights(mask: Tensor) -> None:
    if mask.numel() and not (mask.is_floating_point() or mask.dtype == torch.bool):
        mask = mask.double()
    if mask.numel() and not bool(((mask >= 0) & (mask <= 1)).all()):  # also refuses NaN
        raise InputError(
            "mask holds values outside [0, 1]: it is the partner's weight per block, so each "
            "entry must lie in [0, 1] (a weight outside gives a negative target weight)."
        )
