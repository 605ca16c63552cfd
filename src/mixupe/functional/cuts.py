"""Puzzle Mix's mask and Co-Mixup's batch assignment as labelings of block grids by graph cuts.

The energies of both mixers and their minimisation with the solvers of
:mod:`mixupe.functional.graph_cuts` (``'gco'``, the authors' GCO alpha-beta swap, or
``'maxflow'``, PyMaxflow), whose names (:func:`grid_labeling`, :func:`grid_energy`,
:func:`gco_swap`, :func:`check_solver`, :data:`SOLVERS`) this module also exports. Functions
here run on the host (numpy) and synchronise with the device.

Example:
    >>> import numpy as np
    >>> unary = np.array([[0.0, 1.0], [1.0, 0.0], [0.2, 0.0]])   # 3 blocks in a row, 2 labels
    >>> w = [np.array([0.1, 0.1])]                               # weights of the 2 edges
    >>> grid_labeling(unary, w, np.array([[0.0, 1.0], [1.0, 0.0]])).tolist()
    [0, 1, 1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from mixupe.errors import ConfigError
from mixupe.functional.graph_cuts import (
    SOLVERS,
    _edge_slices,
    _maxflow,
    check_solver,
    gco_swap,
    grid_energy,
    grid_labeling,
)

__all__ = [
    "SOLVERS",
    "check_solver",
    "comixup_assignment",
    "comixup_objective",
    "gco_swap",
    "grid_energy",
    "grid_labeling",
    "neighbourhood",
    "puzzle_energies",
    "puzzle_energy",
    "puzzle_labeling",
]


# ---------------------------------------------------------------------- Puzzle Mix
def _avg_pool(x: Tensor, size: int) -> Tensor:
    """Average ``(B, C, *spatial)`` over non-overlapping windows of ``size`` per spatial axis."""
    for axis in range(2, x.dim()):
        s = x.shape[axis]
        x = x.reshape(*x.shape[:axis], s // size, size, *x.shape[axis + 1 :]).mean(axis + 1)
    return x


def _seam_costs(x_self: Tensor, x_partner: Tensor, grid: tuple[int, ...]) -> list[Tensor]:
    """Per axis, ``d[..., a, b, *edges]``: the mean |difference| across each block seam between
    source a at the first block and source b at the second (0 = partner, 1 = self), averaged
    over channels and along the seam. Inputs ``(B, C, *spatial)``; out ``(B, 2, 2, *edges)``."""
    out = []
    sources = (x_partner, x_self)
    spatial = tuple(x_self.shape[2:])
    for axis, n in enumerate(grid):
        block = spatial[axis] // n
        last = torch.arange(1, n, device=x_self.device) * block - 1  # last line of block p
        table = []
        for a in sources:
            row = []
            for b in sources:
                lo = a.index_select(axis + 2, last)
                hi = b.index_select(axis + 2, last + 1)
                diff = (lo - hi).abs().mean(1)  # (B, *spatial with axis -> n - 1)
                for other, m in enumerate(grid):  # average over the seam's extent
                    if other != axis:
                        size = diff.shape[other + 1]
                        diff = diff.reshape(*diff.shape[: other + 1], m, size // m,
                                            *diff.shape[other + 2 :]).mean(other + 2)
                row.append(diff)
            table.append(torch.stack(row, 1))
        out.append(torch.stack(table, 1))
    return out


def neighbourhood(spatial: Sequence[int], grid: Sequence[int], neigh_size: int) -> int:
    """The pooling size of the seam term: the largest size ``<= neigh_size`` that divides every
    block side (the release takes ``min(neigh_size, block)``, which always divides at its
    power-of-two sizes)."""
    blocks = [s // n for s, n in zip(spatial, grid, strict=True)]
    return max(d for d in range(1, max(1, neigh_size) + 1) if all(b % d == 0 for b in blocks))


def _label_prior(lam: Tensor, n_labels: int) -> Tensor:
    """``-log Binomial(i; L - 1, 1 - lam)`` per label i (i = 0 keeps all of x), ``(B, L)``."""
    k = n_labels - 1
    i = torch.arange(n_labels, dtype=torch.float64, device=lam.device)
    comb = torch.tensor([math.comb(k, j) for j in range(n_labels)], dtype=torch.float64,
                        device=lam.device)
    lam = lam.double().reshape(-1, 1)
    return -torch.log(comb * lam ** (k - i) * (1 - lam) ** i + 1e-8)


def puzzle_energies(
    saliency_self: Tensor,
    saliency_partner: Tensor,
    lam: Tensor | float,
    *,
    n_labels: int = 3,
    beta: float = 1.2,
    gamma: float = 0.5,
    eta: float = 0.2,
    x_self: Tensor | None = None,
    x_partner: Tensor | None = None,
    neigh_size: int = 4,
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Puzzle Mix's mask energy (Kim et al., ICML 2020) for a batch of pairs, on the saliency's
    device, float64: ``(unary (B, *grid, L), weights [(B, *edges)] per axis, V (L, L))``.

    Label ``l`` of a block gives ``x`` the weight ``w_l = 1 - l / (L - 1)`` there. Terms:

    - saliency lost: ``w_l s_partner + (1 - w_l) s_self`` with each map (block saliency,
      ``(B, *grid)``) normalised to sum 1 per sample;
    - label prior: ``eta * -log Binomial(L - 1 - l; L - 1, lam) / n_blocks``;
    - smoothness: ``beta' = beta / (16 n)`` on every edge (``n`` blocks along the longest
      axis), times ``V[l, l'] = (l - l')^2 / (L - 1)^2``;
    - data-local term (when the inputs ``(B, C, *spatial)`` are given, in [0, 1] pixel units):
      the inputs are average-pooled over windows of :func:`neighbourhood` size, and ``gamma
      beta'`` times the mean absolute difference across each seam, for each pair of sources,
      is split exactly into unary terms plus a seam weight ``(t01 + t10 - t00 - t11) / 2``.
      The edge weight is the total ``beta' + seam weight``; it is clamped at 0 (for a
      submodular energy) only where that total is negative, which [0, 1] pixels never give.

    Example:
        >>> u, w, v = puzzle_energies(torch.tensor([[[1.0, 0.0]]]), torch.tensor([[[0.0, 1.0]]]),
        ...                           0.5, n_labels=2, beta=0.0, gamma=0.0, eta=0.0)
        >>> grid_labeling(u[0].numpy(), [a[0].numpy() for a in w], v.numpy()).tolist()
        [[0, 1]]
    """
    b = saliency_self.shape[0]
    grid = tuple(saliency_self.shape[1:])
    n_blocks = math.prod(grid)
    dev = saliency_self.device
    lam_t = torch.as_tensor(lam, dtype=torch.float64, device=dev).expand(b)
    if n_labels < 2:
        raise ConfigError(f"n_labels={n_labels} is invalid: pass an int >= 2 (3 released).")
    ones = (b, *[1] * len(grid))
    s_self = saliency_self.detach().double()
    s_self = s_self / s_self.reshape(b, -1).sum(1).clamp_min(1e-300).reshape(ones)
    s_partner = saliency_partner.detach().double()
    s_partner = s_partner / s_partner.reshape(b, -1).sum(1).clamp_min(1e-300).reshape(ones)
    cost_self = s_partner.clone()  # charged with the weight of x: the partner's lost saliency
    cost_partner = s_self.clone()
    beta_eff = beta / (16.0 * max(grid))
    seams: list[Tensor | None] = [None] * len(grid)
    if gamma > 0 and x_self is not None and x_partner is not None:
        k = neighbourhood(x_self.shape[2:], grid, neigh_size)
        seams = _seam_costs(_avg_pool(x_self.detach().double(), k),
                            _avg_pool(x_partner.detach().double(), k), grid)
    weights = []
    for axis, seam in enumerate(seams):
        first, second = _edge_slices(axis, len(grid))
        first, second = (slice(None), *first), (slice(None), *second)
        edge_shape = tuple(s - 1 if a == axis else s for a, s in enumerate(grid))
        w = torch.full((b, *edge_shape), beta_eff, dtype=torch.float64, device=dev)
        if seam is not None:
            t = gamma * beta_eff * seam  # t[:, a, c]: source a at p, c at q (1 = self)
            cost_self[first] += (t[:, 1, 0] + t[:, 1, 1]) / 2
            cost_partner[first] += (t[:, 0, 0] + t[:, 0, 1]) / 2
            cost_self[second] += (t[:, 0, 1] + t[:, 1, 1]) / 2
            cost_partner[second] += (t[:, 0, 0] + t[:, 1, 0]) / 2
            w = w + (t[:, 0, 1] + t[:, 1, 0] - t[:, 0, 0] - t[:, 1, 1]) / 2
        weights.append(w.clamp_min(0.0))
    levels = 1.0 - torch.arange(n_labels, dtype=torch.float64, device=dev) / (n_labels - 1)
    prior = (eta * _label_prior(lam_t, n_labels) / n_blocks).reshape(b, *[1] * len(grid), -1)
    unary = levels * cost_self[..., None] + (1 - levels) * cost_partner[..., None] + prior
    labels = torch.arange(n_labels, dtype=torch.float64, device=dev)
    pairwise = (labels[:, None] - labels[None, :]) ** 2 / (n_labels - 1) ** 2
    return unary, weights, pairwise


def puzzle_energy(
    saliency_self: Tensor,
    saliency_partner: Tensor,
    lam: float,
    *,
    n_labels: int = 3,
    beta: float = 1.2,
    gamma: float = 0.5,
    eta: float = 0.2,
    x_self: Tensor | None = None,
    x_partner: Tensor | None = None,
    neigh_size: int = 4,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """:func:`puzzle_energies` for one pair (maps ``(*grid)``, inputs ``(C, *spatial)``), as
    host arrays ``(unary, weights, V)`` for :func:`grid_labeling`.

    Example:
        >>> u, w, v = puzzle_energy(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5,
        ...                         n_labels=2, beta=0.0, gamma=0.0, eta=0.0)
        >>> grid_labeling(u, w, v).tolist()       # each block keeps its more salient source
        [[0, 1]]
    """
    if not 0.0 <= lam <= 1.0:
        raise ConfigError(f"lam={lam} is invalid: pass a value in [0, 1].")
    pair = (None, None) if x_self is None or x_partner is None else (x_self[None], x_partner[None])
    unary, weights, pairwise = puzzle_energies(
        saliency_self[None], saliency_partner[None], lam, n_labels=n_labels, beta=beta,
        gamma=gamma, eta=eta, x_self=pair[0], x_partner=pair[1], neigh_size=neigh_size)
    return unary[0].cpu().numpy(), [w[0].cpu().numpy() for w in weights], pairwise.cpu().numpy()


def puzzle_labeling(
    unary: np.ndarray, weights: Sequence[np.ndarray], pairwise: np.ndarray, *,
    solver: str = "gco",
) -> np.ndarray:
    """Minimise one pair's Puzzle Mix energy: ``solver='gco'`` as released (GCO's alpha-beta
    swap on energies scaled by ``1000 n_blocks`` and truncated to int32, edge weights likewise,
    from label 0 everywhere), ``'maxflow'`` by :func:`grid_labeling` on the float energies.

    Example:
        >>> u, w, v = puzzle_energy(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5,
        ...                         n_labels=2, beta=0.0, gamma=0.0, eta=0.0)
        >>> puzzle_labeling(u, w, v, solver="maxflow").tolist()
        [[0, 1]]
    """
    if check_solver(solver) == "maxflow":
        return grid_labeling(unary, weights, pairwise)
    large = 1000 * math.prod(unary.shape[:-1])
    return gco_swap((large * unary).astype(np.int32),
                    [(large * w).astype(np.int32) for w in weights],
                    pairwise.astype(np.float32))


# ---------------------------------------------------------------------- Co-Mixup
def _onehot(labels: np.ndarray | Tensor, m_in: int) -> Tensor:
    return torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.int64), m_in).double()


def comixup_objective(
    labels: np.ndarray | Tensor,
    cost: np.ndarray,
    compat: np.ndarray,
    *,
    beta: float,
    gamma: float,
    threshold: float | None = None,
) -> float:
    """Co-Mixup's objective of an assignment (Kim et al., ICLR 2021).

    ``labels``: int ``(m_out, *grid)`` (the input each block comes from), or weights
    ``(m_out, *grid, m_in)`` (soft blocks: two inputs at 1/2); ``cost`` ``(m_in, *grid)``:
    per-block cost (negative saliency plus the prior). With ``o_j`` the per-input block counts
    of output j: ``sum_j sum_p <cost[:, p], z_jp> + beta/2 sum ||z_jp - z_jq||^2`` over
    neighbours ``+ gamma sum_{j != j'} o_j^T A o_j'``. With ``threshold`` the diversity term of
    output j only counts inputs whose load from the other outputs exceeds it.

    Example:
        >>> comixup_objective(np.array([[0], [0]]), np.zeros((1, 1)), np.eye(1), beta=1.0,
        ...                   gamma=1.0)
        2.0
    """
    m_in = cost.shape[0]
    z = torch.as_tensor(labels)
    z = z.double() if z.is_floating_point() else _onehot(z, m_in)
    ndim = z.dim() - 2
    c = torch.as_tensor(cost, dtype=torch.float64).movedim(0, -1)
    total = float((c * z).sum())
    for axis in range(ndim):
        total += beta / 2 * float((z.narrow(axis + 1, 1, z.shape[axis + 1] - 1)
                                   - z.narrow(axis + 1, 0, z.shape[axis + 1] - 1)).pow(2).sum())
    counts = z.reshape(z.shape[0], -1, m_in).sum(1)
    others = counts.sum(0, keepdim=True) - counts  # load from the other outputs
    load = others @ torch.as_tensor(compat, dtype=torch.float64).T
    if threshold is not None:
        load = torch.where(load > threshold, load, 0.0)
    return total + gamma * float((load * counts).sum())


_SOFT = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.5]])
_SOFT_DIST = torch.tensor([[0.25, 0.25, 1.0], [0.25, 1.0, 0.25], [1.0, 0.25, 0.25]])


def _soft_labels(cost: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The released extension by soft labels (blocks half from each of two inputs) for one
    output: with two inputs in use, one soft label between them; with three or more, one per
    pair of the three most used. Returns ``(unary (*grid, L'), V (L', L'), mix (L' - m, m))``;
    a soft label costs the mean of its inputs' costs less 5e-4 and 1/4 against each of them."""
    m = cost.shape[-1]
    used = count > 0
    if int(used.sum()) >= 3:
        used = torch.zeros_like(used)
        used[torch.topk(count, k=3).indices] = True
        mix_w, dist = _SOFT.to(cost.dtype), _SOFT_DIST.to(cost.dtype)
    else:
        mix_w, dist = torch.full((2, 1), 0.5, dtype=cost.dtype), torch.full((2, 1), 0.25)
    idx = used.nonzero().flatten()
    extra = cost[..., idx] @ mix_w - 5e-4
    k = extra.shape[-1]
    pairwise = 1.0 - torch.eye(m + k)
    pairwise[m:, idx] = dist.T.to(pairwise.dtype)
    pairwise[idx, m:] = dist.to(pairwise.dtype)
    mix = torch.zeros((k, m), dtype=cost.dtype)
    mix[:, idx] = mix_w.T
    return torch.cat([cost, extra], -1), pairwise, mix


def _comixup_output(
    cost: Tensor, count: Tensor, *, beta: float, soft: bool, solver: str, start: Tensor
) -> Tensor:
    """Weights ``(*grid, m)`` of one output from its block costs ``(*grid, m)`` (float32)."""
    m = cost.shape[-1]
    if soft and int((count > 0).sum()) >= 2:
        unary, pairwise, mix = _soft_labels(cost, count)
    else:
        unary, pairwise, mix = cost, 1.0 - torch.eye(m), torch.zeros((0, m), dtype=cost.dtype)
    grid = unary.shape[:-1]
    if solver == "gco":
        weights = [np.full(tuple(s - 1 if k == a else s for k, s in enumerate(grid)), beta,
                            dtype=np.float32) for a in range(len(grid))]
        labels = gco_swap(unary.numpy(), weights, pairwise.numpy().astype(np.float32))
    else:  # alpha-expansion, from the current labeling (approximate with soft labels)
        fastmin = _maxflow().fastmin
        labels = fastmin.aexpansion_grid(unary.double().numpy(), beta * pairwise.double().numpy(),
                                         labels=start.numpy().astype(np.int32)).astype(np.int64)
    z = torch.nn.functional.one_hot(torch.from_numpy(labels), unary.shape[-1]).to(cost.dtype)
    return z[..., :m] + z[..., m:] @ mix


def _resolve(z: Tensor) -> Tensor:
    """The released post-processing for identical outputs: for each pair j < j' of outputs
    drawing on the same set (of two or more) inputs, ``(m_out, m_in)`` extra costs of 1 on the
    first input of that set for j and on the second for j'."""
    used = (z.reshape(z.shape[0], -1, z.shape[-1]).sum(1) > 0).to(z.dtype)
    add = torch.zeros_like(used)
    same = torch.triu(((used[:, None] - used[None]).abs().sum(-1) == 0).to(z.dtype), diagonal=1)
    for j1, j2 in same.nonzero().tolist():
        inputs = used[j1].nonzero().flatten()
        if len(inputs) > 1:
            add[j1, inputs[0]] = 1.0
            add[j2, inputs[1]] = 1.0
    return add


def _released_loss(cost: Tensor, z: Tensor, beta: float, gamma: float) -> Tensor:
    """The released stopping criterion's objective (``A = I``, no threshold), float32."""
    total = (cost.movedim(0, -1) * z).sum()
    for axis in range(1, z.dim() - 1):
        n = z.shape[axis]
        step = z.narrow(axis, 0, n - 1) - z.narrow(axis, 1, n - 1)
        total = total + beta / 2 * step.pow(2).sum()
    counts = z.reshape(z.shape[0], -1, z.shape[-1]).sum(1)
    return total + gamma * ((counts.sum(0) ** 2).sum() - (counts**2).sum())


def comixup_assignment(
    cost: np.ndarray,
    compat: np.ndarray,
    *,
    beta: float,
    gamma: float,
    threshold: float | None,
    init: np.ndarray,
    n_iter: int = 4,
    soft: bool = True,
    resolve: bool = True,
    solver: str = "gco",
) -> np.ndarray:
    """Co-Mixup's assignment by the paper's modular approximation, as released.

    ``cost`` ``(m_in, *grid)``: per-block cost (negative normalised saliency plus the prior);
    ``compat`` ``(m_in, m_in)``; ``beta``, ``gamma``, ``threshold`` already divided by (for
    ``threshold``: multiplied by) the number of blocks; ``init`` ``(m_out, *grid)``: the
    starting assignment. For each output j in turn, with ``p`` the other outputs' per-input
    block counts and ``mask = (A p > threshold)``, the block cost of input i gains
    ``2 gamma ((mask * A) p)_i`` (the release's operator order: the mask weights A's columns),
    and the output is relabelled by a Potts graph cut (``beta`` per unequal neighbour pair):
    ``solver='gco'``, GCO's alpha-beta swap from label 0 (the release; float32 energies);
    ``'maxflow'``, PyMaxflow's alpha-expansion from the current labels. With ``soft`` (the
    release), from the second sweep on an output using two or more inputs may also take soft
    blocks (:func:`_soft_labels`). With ``resolve`` (the release), after sweep ``n_iter - 1``
    outputs drawing on identical input sets get extra costs ``gamma`` (:func:`_resolve`) for
    the last sweep. Sweeps stop when the released objective changes by under 1e-6 relative.
    Returns the weights ``(m_out, *grid, m_in)`` (float64: one 1, or two 1/2, per block).

    Example:
        >>> cost = np.array([[[-1.0, 0.0]], [[0.0, -1.0]]])     # 2 inputs, a 1 x 2 grid
        >>> z = comixup_assignment(cost, np.eye(2), beta=0.0, gamma=0.0, threshold=None,
        ...                        init=np.zeros((2, 1, 2), dtype=np.int64), solver="maxflow")
        >>> z[0].argmax(-1).tolist()
        [[0, 1]]
    """
    check_solver(solver)
    c = torch.as_tensor(cost, dtype=torch.float32)
    a_mat = torch.as_tensor(compat, dtype=torch.float32)
    m_in = c.shape[0]
    z = torch.nn.functional.one_hot(torch.as_tensor(init, dtype=torch.int64), m_in).float()
    shape = (-1, *[1] * (c.dim() - 1))
    loss_prev = _released_loss(c, z, beta, gamma)
    penalty = z.reshape(-1, m_in).sum(0)
    add = None
    for sweep in range(n_iter):
        for j in range(z.shape[0]):
            count = z[j].reshape(-1, m_in).sum(0)
            penalty = penalty - count
            load = a_mat @ penalty
            mask = (load > threshold).float() if threshold is not None else torch.ones(m_in)
            cp = c + (2 * gamma * ((mask * a_mat) @ penalty)).reshape(shape)
            if add is not None:
                cp = cp + gamma * add[j].reshape(shape)
            z[j] = _comixup_output(cp.movedim(0, -1), count, beta=beta, soft=soft and sweep > 0,
                                   solver=solver, start=z[j].argmax(-1))
            penalty = penalty + z[j].reshape(-1, m_in).sum(0)
        if resolve and sweep == n_iter - 2:
            add = _resolve(z)
        loss = _released_loss(c, z, beta, gamma)
        if float((loss_prev - loss).abs() / loss.abs()) < 1e-6:
            break
        loss_prev = loss
    return z.double().numpy()
