"""Saliency-guided mixers that optimise their masks: Puzzle Mix and Co-Mixup.

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
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError
from mixupe.functional import cuts as MC
from mixupe.functional import masks as MM
from mixupe.functional import transport as MT
from mixupe.objectives.base import Mixer, MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.masked import spatial_layout

__all__ = ["CoMixup", "PuzzleMix", "input_gradient"]


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
        check.integer(n_labels, "n_labels", minimum=2, hint="(3 released)")
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps),
                            ("adv_eps", adv_eps)):
            check.non_negative(value, name)
        check.integer(neigh_size, "neigh_size", minimum=1, what="a block side in pixels")
        check.integer(t_size, "t_size", minimum=1, what="a block side in pixels", none=True)
        check.interval(adv_p, "adv_p", 0.0, 1.0, hint="(a probability)")
        if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
            raise ConfigError(f"clip={clip!r} is invalid: pass (low, high) with low < high.")
        self.n_labels = n_labels
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.neigh_size = neigh_size
        self.mean, self.std = _channel_stats(mean, "mean"), _channel_stats(std, "std")
        self.transport = bool(transport)
        self.t_eps = float(t_eps)
        self.t_size = t_size
        self.adv_p = float(adv_p)
        self.adv_eps = float(adv_eps)
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
        clip = self.clip

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

        return MixPlan(lam=lam_eff, perm=perm_t, layer=INPUT_LAYER, mix=mix,
                       mask=pixel.squeeze(1))


def _check_weights(mask: Tensor) -> None:
    if mask.numel() and not (mask.is_floating_point() or mask.dtype == torch.bool):
        mask = mask.double()
    if mask.numel() and not bool(((mask >= 0) & (mask <= 1)).all()):  # also refuses NaN
        raise InputError(
            "mask holds values outside [0, 1]: it is the partner's weight per block, so each "
            "entry must lie in [0, 1] (a weight outside gives a negative target weight)."
        )


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


def sample_gamma(concentration: Tensor, *, generator: torch.Generator) -> Tensor:
    """Gamma(concentration, 1) draws from ``generator`` (Marsaglia & Tsang's method; for a
    concentration below 1, ``Gamma(a + 1) U^(1/a)``), float64, on the generator's device.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> bool((sample_gamma(torch.full((5,), 2.0), generator=g) > 0).all())
        True
    """
    a = concentration.double().to(generator.device)
    boost = a < 1
    d = torch.where(boost, a + 1, a) - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):
        z = torch.randn(a.shape, generator=generator, device=a.device, dtype=a.dtype)
        u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=generator, device=a.device, dtype=a.dtype)
    return torch.where(boost, out * u ** (1.0 / a), out)


def sample_dirichlet(alpha: float, n: int, *, generator: torch.Generator) -> Tensor:
    """One ``Dirichlet(alpha, ..., alpha)`` draw of ``n`` weights by Gamma normalisation."""
    g = sample_gamma(torch.full((n,), float(alpha), dtype=torch.float64), generator=generator)
    return g / g.sum()


def peak_distance(pixel_saliency: Tensor, window: int = 8) -> Tensor:
    """The release's input compatibility: the L1 distance between the places of the largest
    ``window``-pooled saliency (stride 1; the window shrinks to the input), ``(B, B)``."""
    spatial = tuple(pixel_saliency.shape[1:])
    kernel = tuple(min(window, s) for s in spatial)
    pool = F.avg_pool1d if len(spatial) == 1 else F.avg_pool2d
    z = pool(pixel_saliency.unsqueeze(1).float(), kernel, stride=1).squeeze(1)
    flat = z.reshape(z.shape[0], -1).argmax(1)
    coords = torch.stack(torch.unravel_index(flat, tuple(z.shape[1:])), -1).float()
    return (coords[:, None] - coords[None]).abs().sum(-1)


class CoMixup(_GridMixer):
    """Co-Mixup (Kim et al., ICLR 2021): each mixed sample is a mosaic of blocks from any
    inputs of the batch, chosen jointly for the whole batch.

    Per step, as released: a grid (``n`` from ``grid_sizes``, released default 4), block
    saliencies from the input gradient (train mode, as the release with ``clean_lam > 0``;
    ``saliency_train=False`` for eval mode), normalised to sum 1 per input, and a prior
    ``alpha_i`` per input drawn from ``Dirichlet(alpha)`` (Gamma normalisation on the
    generator). For each partition of ``partition`` inputs (groups of 20), as many outputs as
    inputs are built by minimising

        sum_j sum_p (-s[z_jp, p] - eta' log alpha[z_jp]) + beta' #(unequal neighbours)
        + gamma' sum_{j != j'} o_j^T A o_j'

    (``o_j``: block counts per input in output j; ``beta' = beta / n_blocks`` and likewise
    for ``gamma``, ``eta``; the diversity term only where the load exceeds
    ``threshold * n_blocks``; ``A = (1 - omega) I + omega A_dist``, ``A_dist`` the L1 distance
    of the inputs' pooled saliency peaks) by the paper's modular approximation
    (:func:`mixupe.functional.cuts.comixup_assignment`: ``n_iter`` sweeps from a random start,
    soft blocks from the second sweep, identical outputs resolved before the last sweep
    (``resolve``), each output cut by ``solver``: ``'gco'`` is the authors' GCO alpha-beta
    swap (``pip install gco-wrapper``), ``'maxflow'`` PyMaxflow's alpha-expansion, which
    reaches other local optima). A soft block is half of each of two inputs. The target of
    output j is the exact share of each input in it (``ObjectiveOutput.targets``).

    ``lam`` is each output's largest share and ``perm`` that input; ``mask`` is the input
    index of every pixel (for a soft block, the lower index of its two). ``assignment=``
    (``(B, *grid)`` input indices within each partition) skips the optimisation. MixupE's
    constant has no closed form here (no pairwise lambda): ``mixupe_c`` (default 1/3, the
    value for a uniform lambda) sets it. Outputs keep a ``channels_last`` input's memory
    format.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> out = CoMixup(num_classes=3, grid_sizes=(2,), seed=0, solver="maxflow")(
        ...     net, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> out.targets.sum(1).allclose(torch.ones(4))
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        grid_sizes: Sequence[int] = (4,),
        beta: float = 0.32,
        gamma: float = 1.0,
        eta: float = 0.05,
        threshold: float | None = 0.83,
        omega: float = 0.001,
        n_iter: int = 4,
        partition: int = 20,
        soft_blocks: bool = True,
        resolve: bool = True,
        solver: str = "gco",
        saliency_train: bool = True,
        mixupe_c: float = 1.0 / 3.0,
        spatial_dims: int | None = None,
        channels_last: bool = False,
        num_classes: int | None = None,
        label_smoothing: float = 0.0,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        validate: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__(alpha=alpha, grid_sizes=grid_sizes, spatial_dims=spatial_dims,
                         channels_last=channels_last, solver=solver, num_classes=num_classes,
                         label_smoothing=label_smoothing, seed=seed, generator=generator,
                         validate=validate, check_finite=check_finite)
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta)):
            check.non_negative(value, name)
        check.interval(omega, "omega", 0.0, 1.0, hint="(a weight)")
        check.integer(n_iter, "n_iter", minimum=1, what="the number of sweeps")
        check.integer(partition, "partition", minimum=2, hint="(20 released)")
        check.interval(mixupe_c, "mixupe_c", 0.0, 1.0, closed="(]")
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.threshold = None if threshold is None else float(threshold)
        self.omega = float(omega)
        self.n_iter = n_iter
        self.partition = partition
        self.soft_blocks, self.resolve = bool(soft_blocks), bool(resolve)
        self.saliency_train = bool(saliency_train)
        self.mixupe_c = float(mixupe_c)

    def mixupe_constant(self) -> float:
        """The ``mixupe_c`` option (Co-Mixup draws no pairwise lambda)."""
        return self.mixupe_c

    def solve_partition(
        self, saliency: Tensor, distance: Tensor, prior: Tensor, init: Tensor
    ) -> Tensor:
        """One partition's block weights ``(m, *grid, m)`` from its block saliency ``(m,
        *grid)``, peak distances ``(m, m)``, prior ``(m,)`` and start ``(m, *grid)``, computed
        on the host in float32 in the release's order of operations."""
        m = saliency.shape[0]
        grid = tuple(saliency.shape[1:])
        n_blocks = math.prod(grid)
        ones = (m, *[1] * len(grid))
        sal = saliency.detach().float().cpu()
        cost = -(sal / sal.reshape(m, -1).sum(1).reshape(ones))
        cost = cost - self.eta / n_blocks * torch.log(prior.float().cpu() + 1e-8).reshape(ones)
        dist = distance.float().cpu()
        compat = torch.eye(m)
        if float(dist.sum()) > 0:
            compat = (1 - self.omega) * compat + self.omega * (dist / dist.sum() * m)
        z = MC.comixup_assignment(
            cost.numpy(), compat.numpy(), beta=self.beta / n_blocks, gamma=self.gamma / n_blocks,
            threshold=None if self.threshold is None else self.threshold * n_blocks,
            init=init.cpu().numpy(), n_iter=self.n_iter, soft=self.soft_blocks,
            resolve=self.resolve, solver=self.solver)
        return torch.from_numpy(z)

    def sample_assignment(
        self, saliency: Tensor, pixel_saliency: Tensor, generator: torch.Generator
    ) -> Tensor:
        """Block weights over the inputs of each output's partition, ``(B, *grid, m_max)``."""
        b = saliency.shape[0]
        grid = tuple(saliency.shape[1:])
        out = torch.zeros((b, *grid, min(b, self.partition)), dtype=torch.float64)
        dist = peak_distance(pixel_saliency.detach())
        for lo in range(0, b, self.partition):
            m = min(self.partition, b - lo)
            prior = sample_dirichlet(self.alpha, m, generator=generator)
            init = torch.randint(m, (m, *grid), generator=generator, device=generator.device)
            out[lo : lo + m, ..., :m] = self.solve_partition(
                saliency[lo : lo + m], dist[lo : lo + m, lo : lo + m], prior, init)
        return out.to(saliency.device)

    def _given(self, assignment: Any, layout: MM.Layout, batch_size: int) -> tuple[int, Tensor]:
        n = _grid_of(assignment, layout, batch_size)
        if assignment.is_floating_point():
            raise InputError("assignment must hold integer input indices (within each "
                             "partition), shape (B, *grid).")
        m = min(batch_size, self.partition)
        offsets = (torch.arange(batch_size) // self.partition) * self.partition
        a = assignment.long().cpu()
        if int(a.min()) < 0 or int((a + offsets.reshape(-1, *[1] * (a.dim() - 1))).max()) >= (
            batch_size
        ) or int(a.max()) >= m:
            raise InputError("assignment holds input indices outside the batch (or partition): "
                             f"pass indices in [0, {m}) within each partition of "
                             f"{self.partition}.")
        return n, F.one_hot(a, m).double()

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
        assignment: Tensor | None = None,
        grid: int | None = None,
    ) -> MixPlan:
        """Saliency and the batch assignment for one step (see the class docstring)."""
        if lam is not None or perm is not None:
            raise ConfigError(
                "Co-Mixup optimises which inputs each output takes, so lam= and perm= do not "
                "apply: drop them, or pass assignment= to fix the step."
            )
        layout = self._layout(x)
        z = None
        if assignment is not None:
            grid, z = self._given(assignment, layout, batch_size)
        n = self._grid(layout, grid, generator)
        grid_shape = (n,) * len(layout.spatial)
        if z is None:
            grad = input_gradient(model, x, targets, train=self.saliency_train)
            pixel_sal = self._saliency(grad, layout)
            z = self.sample_assignment(_block_mean(pixel_sal, grid_shape), pixel_sal, generator)
        return self._mosaic(z.to(device), layout, batch_size, dtype)

    def _mosaic(
        self, z: Tensor, layout: MM.Layout, batch_size: int, dtype: torch.dtype
    ) -> MixPlan:
        """The plan from block weights ``(B, *grid, m)`` over each output's partition."""
        device = z.device
        nd = z.dim() - 2
        offsets = (torch.arange(batch_size, device=device) // self.partition) * self.partition
        vals, idx = torch.topk(z, k=min(2, z.shape[-1]), dim=-1)
        soft = vals[..., -1] > 0 if z.shape[-1] > 1 else torch.zeros_like(vals[..., 0], dtype=bool)
        first = torch.where(soft, idx.min(-1).values, idx[..., 0])
        second = torch.where(soft, idx.max(-1).values, idx[..., 0])
        w_first = torch.where(soft, torch.gather(z, -1, first.unsqueeze(-1)).squeeze(-1), 1.0)
        shape = (-1, *[1] * nd)
        src_a = first + offsets.reshape(shape)
        src_b = second + offsets.reshape(shape)
        flat = z.reshape(batch_size, -1, z.shape[-1]).sum(1) / math.prod(z.shape[1:-1])
        weights = torch.zeros((batch_size, batch_size), dtype=dtype, device=device)
        cols = offsets[:, None] + torch.arange(z.shape[-1], device=device)[None]
        valid = cols < batch_size
        weights[torch.arange(batch_size, device=device)[:, None].expand_as(cols)[valid],
                cols[valid]] = flat[valid].to(dtype)
        pix_a = _upsample(src_a, layout.spatial)
        pix_b = _upsample(src_b, layout.spatial)
        pix_w = _upsample(w_first, layout.spatial)

        def mix(t: Tensor) -> Tensor:
            tc = layout.to_channels_first(t)
            c = tc.shape[1]

            def take(index: Tensor) -> Tensor:
                idx = index.reshape(batch_size, 1, -1).expand(batch_size, c, -1)
                return torch.gather(tc.reshape(batch_size, c, -1), 0, idx).reshape(tc.shape)

            w = pix_w.unsqueeze(1).to(t.dtype)
            out = torch.where(w == 1, take(pix_a), w * take(pix_a) + (1 - w) * take(pix_b))
            return _keep_format(layout.from_channels_first(out), t)

        lam_t, perm_t = weights.max(1)
        return MixPlan(lam=lam_t, perm=perm_t, layer=INPUT_LAYER, mix=mix, mask=pix_a,
                       weights=weights)
