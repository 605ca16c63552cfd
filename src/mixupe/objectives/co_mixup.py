"""Co-Mixup (Kim et al., ICLR 2021): a batch of mixed samples from many inputs at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mixupe import _checks as check
from mixupe.errors import ConfigError, InputError
from mixupe.functional import cuts as MC
from mixupe.functional import masks as MM
from mixupe.objectives.base import MixPlan
from mixupe.objectives.hooks import INPUT_LAYER
from mixupe.objectives.saliency_guided import (
    _block_mean,
    _grid_of,
    _GridMixer,
    _keep_format,
    _upsample,
    input_gradient,
)

__all__ = ["CoMixup", "peak_distance", "sample_dirichlet", "sample_gamma"]


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
