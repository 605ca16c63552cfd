"""Saliency-guided mixers that optimise their masks: Puzzle Mix and Co-Mixup.

Both take the saliency of each input from a backward pass of the model on the clean batch
(``sqrt(mean over channels of (dL/dx)^2)``, computed in eval mode so BatchNorm statistics
are not touched, without accumulating parameter gradients), pool it over a grid of blocks
drawn per step, and choose the mask by graph cuts (:mod:`mixupe.functional_cuts`, solved by
the ``PyMaxflow`` package). The cuts run on the host, so these mixers synchronise with the
device once per step and cost a backward pass more than Mixup. They work on images
``(B, C, H, W)``, signals ``(B, C, L)`` and, with ``channels_last=True``, sequences
``(B, L, D)``; the grid sizes must divide the spatial sizes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mixupe import functional as MF
from mixupe import functional_cuts as MC
from mixupe import functional_masks as MM
from mixupe import functional_transport as MT
from mixupe.errors import ConfigError, InputError
from mixupe.objectives.base import Mixer, MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.masked import spatial_layout

__all__ = ["CoMixup", "PuzzleMix", "input_gradient"]


def input_gradient(model: nn.Module, x: Tensor, targets: Tensor) -> Tensor:
    """The gradient of the mean soft cross-entropy with respect to the inputs ``x``.

    The model runs in eval mode (its mode is restored) and only the input gradient is taken,
    so neither BatchNorm statistics nor parameter ``.grad`` change.

    Example:
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> input_gradient(net, torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).shape
        torch.Size([1, 2])
    """
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x_req = x.detach().requires_grad_(True)
            loss = MF.soft_cross_entropy(model(x_req), targets)
            (grad,) = torch.autograd.grad(loss, x_req)
    finally:
        model.train(was_training)
    return grad


def _block_mean(t: Tensor, grid: tuple[int, ...]) -> Tensor:
    """``(B, *spatial)`` -> ``(B, *grid)`` block means."""
    blocks = MT.to_blocks(t.unsqueeze(1), grid)
    return blocks.reshape(*blocks.shape[:2], -1).mean(-1).reshape(t.shape[0], *grid)


def _upsample(t: Tensor, spatial: tuple[int, ...]) -> Tensor:
    """``(B, *grid)`` -> ``(B, *spatial)`` by repeating each block value over its block."""
    out = t
    for axis, size in enumerate(spatial):
        out = out.repeat_interleave(size // t.shape[axis + 1], dim=axis + 1)
    return out


class _GridMixer(Mixer):
    """Options shared by the saliency-guided mixers: grid sizes, layout, saliency."""

    needs_targets = True

    def __init__(
        self,
        *,
        grid_sizes: Sequence[int],
        spatial_dims: int | None,
        channels_last: bool,
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

    def _layout(self, x: Any) -> MM.Layout:
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


class PuzzleMix(_GridMixer):
    """Puzzle Mix (Kim et al., ICML 2020): a saliency-aware mask from a graph cut, optimal
    transport of blocks, and optional adversarial noise.

    Per step: a grid of ``n x n`` blocks (``n`` drawn from ``grid_sizes`` among those that
    divide the image), ``lam ~ Beta(alpha, alpha)``, the pairing ``perm``; the input gradient
    of the clean loss gives each block its saliency; for each pair a mask with ``n_labels``
    levels (``x`` weight 1, 1/2, 0 for 3 labels) minimises
    :func:`mixupe.functional_cuts.puzzle_energy` (saliency lost, smoothness ``beta``,
    data-local smoothness ``gamma``, label prior ``eta`` towards ``lam``) by graph cuts.
    With ``transport=True`` each source's blocks are then re-arranged (exact assignment,
    ``t_eps`` times the squared block distance against the saliency moved into the region
    where that source shows), and the two are blended by the
    mask. The label weight of ``x`` is the exact mean of its mask.

    Adversarial option (``adv_p > 0``): with probability ``adv_p`` each of the two sources gets
    noise ``coef * clamp(u + adv_step * sign(grad), -adv_eps, adv_eps)`` (``u`` a uniform random
    start in ``[-adv_eps, adv_eps]`` at which the saliency gradient is taken, ``coef ~ U(0, 1)``),
    in the input's own units (the release works in [0, 1] pixel units with ``adv_eps = 10/255``
    and clips to that range: pass ``clip=(lo, hi)`` in your input units for that).

    ``mask=`` (the partner's weight per block, ``(B, *grid)``) with ``perm=`` skips the cut
    and makes the step deterministic when ``transport=False`` and ``adv_p=0``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> pm = PuzzleMix(num_classes=3, grid_sizes=(2, 4), seed=0)
        >>> out = pm(net, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
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
        transport: bool = True,
        t_eps: float = 0.8,
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
                         spatial_dims=spatial_dims, channels_last=channels_last,
                         num_classes=num_classes, label_smoothing=label_smoothing, seed=seed,
                         generator=generator, validate=validate, check_finite=check_finite)
        if not (isinstance(n_labels, int) and n_labels >= 2):
            raise ConfigError(f"n_labels={n_labels!r} is invalid: pass an int >= 2 (3 released).")
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta), ("t_eps", t_eps),
                            ("adv_eps", adv_eps)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name}={value!r} is invalid: pass a finite value >= 0.")
        if not (isinstance(adv_p, (int, float)) and 0.0 <= adv_p <= 1.0):
            raise ConfigError(f"adv_p={adv_p!r} is invalid: pass a probability in [0, 1].")
        if clip is not None and not (len(clip) == 2 and clip[0] < clip[1]):
            raise ConfigError(f"clip={clip!r} is invalid: pass (low, high) with low < high.")
        self.n_labels = n_labels
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.transport = bool(transport)
        self.t_eps = float(t_eps)
        self.adv_p = float(adv_p)
        self.adv_eps = float(adv_eps)
        self.adv_step = float(adv_step) if adv_step is not None else 1.2 * self.adv_eps
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def sample_mask(
        self, saliency: Tensor, lam: Tensor, perm: Tensor, x_cf: Tensor, grid: tuple[int, ...]
    ) -> Tensor:
        """The partner's weight per block, ``(B, *grid)``, by one graph cut per pair."""
        perm_l = perm.tolist()
        lam_l = lam.expand(len(perm_l)).tolist()
        levels = 1.0 - np.arange(self.n_labels) / (self.n_labels - 1)
        out = []
        for b, p in enumerate(perm_l):
            unary, weights, pairwise = MC.puzzle_energy(
                saliency[b], saliency[p], lam_l[b], n_labels=self.n_labels, beta=self.beta,
                gamma=self.gamma, eta=self.eta, x_self=x_cf[b], x_partner=x_cf[p])
            labels = MC.grid_labeling(unary, weights, pairwise)
            out.append(1.0 - levels[labels])
        return torch.tensor(np.stack(out), dtype=saliency.dtype, device=saliency.device)

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
        n = self._grid(layout, grid, generator)
        grid_shape = (n,) * len(layout.spatial)
        lam_t, perm_t = self._lam_perm(batch_size, device=device, dtype=dtype, lam=lam,
                                       perm=perm, generator=generator)
        adv = [False, False]
        start = None
        if self.adv_p > 0:
            draws = torch.rand(2, generator=generator, device=generator.device)
            adv = [bool(v) for v in (draws < self.adv_p).tolist()]
        if any(adv):
            u = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype)
            start = ((2 * u - 1) * self.adv_eps).to(device)
        x_at = x if start is None else x + start
        grad = input_gradient(model, x_at, targets)
        noise = None
        if start is not None:
            coef = torch.rand((), generator=generator, device=generator.device).to(device)
            noise = MM.puzzle_adversarial_noise(start, grad, eps=self.adv_eps,
                                                step=self.adv_step, coef=coef.to(x.dtype))
        saliency = _block_mean(self._saliency(grad, layout), grid_shape)
        x_cf = layout.to_channels_first(x.detach())
        if mask is None:
            weight_partner = self.sample_mask(saliency, lam_t, perm_t, x_cf, grid_shape)
        else:
            weight_partner = mask.to(device=device, dtype=saliency.dtype)
        sources = None
        if self.transport:
            sources = (
                MT.block_transport(saliency, weight_partner < 1, t_eps=self.t_eps),
                MT.block_transport(saliency[perm_t], weight_partner > 0, t_eps=self.t_eps),
            )
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
                first = MT.move_blocks(first, sources[0], grid_shape)
                second = MT.move_blocks(second, sources[1], grid_shape)
            w = pixel.to(t.dtype)
            return layout.from_channels_first(first * (1 - w) + second * w)

        return MixPlan(lam=lam_eff, perm=perm_t, layer=INPUT_LAYER, mix=mix,
                       mask=pixel.squeeze(1))


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


class CoMixup(_GridMixer):
    """Co-Mixup (Kim et al., ICLR 2021): each mixed sample is a mosaic of blocks from any
    inputs of the batch, chosen jointly for the whole batch.

    Per step: a grid (``n`` from ``grid_sizes``), block saliencies from the input gradient
    (normalised to sum 1 per input), and a prior ``alpha_i`` per input drawn from
    ``Dirichlet(alpha)``. For each partition of ``partition`` inputs (as released, the batch
    is split into groups of 20), as many outputs as inputs are built by minimising

        sum_j sum_p (-s[z_jp, p] - eta' log alpha[z_jp]) + beta' #(unequal neighbours)
        + gamma' sum_{j != j'} o_j^T A o_j'

    (``o_j``: block counts per input in output j; ``beta' = beta / n_blocks`` and likewise
    for ``gamma``, ``eta``; the diversity term only where the load exceeds
    ``threshold * n_blocks``; ``A = (1 - omega) I + omega A_dist``, ``A_dist`` the distance of
    the inputs' saliency peaks) by the paper's modular approximation
    (:func:`mixupe.functional_cuts.comixup_assignment`, ``n_iter`` sweeps from a random start).
    Labels are hard (each block from one input) and the target of output j is the exact
    share of each input's blocks (``ObjectiveOutput.targets``); the released code's optional
    soft blocks and identical-output resolution step are left out.

    ``lam`` is each output's largest share and ``perm`` that input; ``mask`` is the input
    index of every pixel. ``assignment=`` (``(B, *grid)`` input indices within each
    partition) skips the optimisation. MixupE's constant has no closed form here (no pairwise
    lambda): ``mixupe_c`` (default 1/3, the value for a uniform lambda) sets it.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        >>> out = CoMixup(num_classes=3, grid_sizes=(2,), seed=0)(
        ...     net, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
        >>> out.targets.sum(1).allclose(torch.ones(4))
        True
    """

    def __init__(
        self,
        *,
        alpha: float = 2.0,
        grid_sizes: Sequence[int] = (2, 4, 8, 16),
        beta: float = 0.32,
        gamma: float = 1.0,
        eta: float = 0.05,
        threshold: float | None = 0.83,
        omega: float = 0.001,
        n_iter: int = 4,
        partition: int = 20,
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
                         channels_last=channels_last, num_classes=num_classes,
                         label_smoothing=label_smoothing, seed=seed, generator=generator,
                         validate=validate, check_finite=check_finite)
        for name, value in (("beta", beta), ("gamma", gamma), ("eta", eta)):
            if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
                raise ConfigError(f"{name}={value!r} is invalid: pass a finite value >= 0.")
        if not (isinstance(omega, (int, float)) and 0.0 <= omega <= 1.0):
            raise ConfigError(f"omega={omega!r} is invalid: pass a weight in [0, 1].")
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise ConfigError(f"n_iter={n_iter!r} is invalid: pass an int >= 1.")
        if not (isinstance(partition, int) and partition >= 2):
            raise ConfigError(f"partition={partition!r} is invalid: pass an int >= 2 (20 "
                              "released).")
        if not (isinstance(mixupe_c, (int, float)) and 0 < mixupe_c <= 1):
            raise ConfigError(f"mixupe_c={mixupe_c!r} is invalid: pass a value in (0, 1].")
        self.beta, self.gamma, self.eta = float(beta), float(gamma), float(eta)
        self.threshold = None if threshold is None else float(threshold)
        self.omega = float(omega)
        self.n_iter = n_iter
        self.partition = partition
        self.mixupe_c = float(mixupe_c)

    def mixupe_constant(self) -> float:
        """The ``mixupe_c`` option (Co-Mixup draws no pairwise lambda)."""
        return self.mixupe_c

    def sample_assignment(self, saliency: Tensor, generator: torch.Generator) -> Tensor:
        """Input index (within its partition) of every block of every output, ``(B, *grid)``."""
        b = saliency.shape[0]
        grid = tuple(saliency.shape[1:])
        n_blocks = math.prod(grid)
        sal = saliency.detach().double().cpu()
        out = torch.empty((b, *grid), dtype=torch.int64)
        coords = torch.stack(torch.meshgrid(*[torch.arange(n) for n in grid], indexing="ij"),
                             -1).reshape(n_blocks, len(grid)).double()
        for lo in range(0, b, self.partition):
            part = sal[lo : lo + self.partition]
            m = part.shape[0]
            norm = part / part.reshape(m, -1).sum(1).clamp_min(1e-300).reshape(m, *[1] * len(grid))
            conc = torch.full((1, m), self.alpha, dtype=torch.float64, device=generator.device)
            prior = torch._sample_dirichlet(conc, generator=generator)[0].cpu()
            cost = -norm - self.eta / n_blocks * torch.log(prior + 1e-8).reshape(
                m, *[1] * len(grid))
            peaks = coords[part.reshape(m, -1).argmax(1)]
            dist = torch.cdist(peaks, peaks)
            compat = torch.eye(m, dtype=torch.float64)
            if self.omega > 0 and float(dist.sum()) > 0:
                compat = (1 - self.omega) * compat + self.omega * dist / dist.sum() * m
            init = torch.randint(m, (m, *grid), generator=generator, device=generator.device)
            labels = MC.comixup_assignment(
                cost.numpy(), compat.numpy(), beta=self.beta / n_blocks,
                gamma=self.gamma / n_blocks,
                threshold=None if self.threshold is None else self.threshold * n_blocks,
                init=init.cpu().numpy(), n_iter=self.n_iter)
            out[lo : lo + m] = torch.from_numpy(labels)
        return out.to(saliency.device)

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
        if assignment is not None:
            grid = _grid_of(assignment, layout, batch_size)
        n = self._grid(layout, grid, generator)
        grid_shape = (n,) * len(layout.spatial)
        if assignment is None:
            grad = input_gradient(model, x, targets)
            saliency = _block_mean(self._saliency(grad, layout), grid_shape)
            assignment = self.sample_assignment(saliency, generator)
        assignment = assignment.to(device=device, dtype=torch.int64)
        offsets = (torch.arange(batch_size, device=device) // self.partition) * self.partition
        source = assignment + offsets.reshape(-1, *[1] * len(grid_shape))
        if self.validate and (int(source.min()) < 0 or int(source.max()) >= batch_size):
            raise InputError("assignment holds input indices outside the batch (or partition).")
        flat = source.reshape(batch_size, -1)
        weights = torch.zeros((batch_size, batch_size), dtype=dtype, device=device)
        weights.scatter_add_(1, flat, torch.full(flat.shape, 1.0 / flat.shape[1], dtype=dtype,
                                                 device=device))
        pixel = _upsample(source, layout.spatial)

        def mix(t: Tensor) -> Tensor:
            tc = layout.to_channels_first(t)
            c = tc.shape[1]
            index = pixel.reshape(batch_size, 1, -1).expand(batch_size, c, -1)
            out = torch.gather(tc.reshape(batch_size, c, -1), 0, index).reshape(tc.shape)
            return layout.from_channels_first(out)

        lam_t, perm_t = weights.max(1)
        return MixPlan(lam=lam_t, perm=perm_t, layer=INPUT_LAYER, mix=mix, mask=pixel,
                       weights=weights)
