"""Labelings of block grids by graph cuts: Puzzle Mix's mask and Co-Mixup's batch assignment.

The max-flow itself is solved by the ``PyMaxflow`` package (``pip install PyMaxflow``); this
module builds the graphs. Every energy has the form

    E(z) = sum_p U[p, z_p] + sum_{(p, q) neighbours} w_pq V[z_p, z_q]

over a 1-D or 2-D grid of blocks, with ``V`` a semi-metric (``V[a, a] = 0``, symmetric,
non-negative) and ``w_pq >= 0``. With two labels one cut gives the exact minimum; with more,
the alpha-beta swap algorithm (Boykov, Veksler & Zabih 2001) repeats exact binary cuts over
label pairs until no swap lowers the energy. Functions here run on the host (numpy) and are
called on detached, host-side copies of saliency maps: they synchronise with the device.

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
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from mixupe.errors import ConfigError, DataUnavailableError

__all__ = [
    "comixup_assignment",
    "comixup_objective",
    "grid_energy",
    "grid_labeling",
    "puzzle_energy",
]


def _maxflow():  # pragma: no cover - exercised through the functions below
    try:
        import maxflow
    except ImportError:
        raise DataUnavailableError(
            "Puzzle Mix and Co-Mixup need the max-flow package PyMaxflow: run "
            "`pip install PyMaxflow` (or `pip install 'mixupe[family]'`)."
        ) from None
    return maxflow


def _edge_slices(axis: int, ndim: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples of the first and second endpoint of every edge along ``axis``."""
    first = [slice(None)] * ndim
    second = [slice(None)] * ndim
    first[axis] = slice(None, -1)
    second[axis] = slice(1, None)
    return tuple(first), tuple(second)


def grid_energy(
    labels: np.ndarray, unary: np.ndarray, weights: Sequence[np.ndarray], pairwise: np.ndarray
) -> float:
    """The energy ``sum U[p, z_p] + sum w_pq V[z_p, z_q]`` of one labeling.

    ``labels`` has the grid's shape; ``unary`` is ``(*grid, L)``; ``weights[k]`` holds the
    weights of the edges along axis ``k`` (the grid's shape with that axis one shorter).

    Example:
        >>> grid_energy(np.array([0, 1]), np.zeros((2, 2)), [np.array([2.0])],
        ...             np.array([[0.0, 1.0], [1.0, 0.0]]))
        2.0
    """
    labels = np.asarray(labels)
    total = float(np.take_along_axis(unary, labels[..., None], axis=-1).sum())
    for axis, w in enumerate(weights):
        a, b = _edge_slices(axis, labels.ndim)
        total += float((w * pairwise[labels[a], labels[b]]).sum())
    return total


def _check_energy(unary: np.ndarray, weights: Sequence[np.ndarray], pairwise: np.ndarray) -> None:
    grid = unary.shape[:-1]
    n_labels = unary.shape[-1]
    if len(grid) not in (1, 2) or len(weights) != len(grid):
        raise ConfigError(
            f"a grid energy needs a 1-D or 2-D grid and one weight array per axis, got grid "
            f"{grid} and {len(weights)} weight array(s)."
        )
    for axis, w in enumerate(weights):
        want = tuple(s - 1 if k == axis else s for k, s in enumerate(grid))
        if tuple(w.shape) != want or (w < 0).any():
            raise ConfigError(
                f"edge weights along axis {axis} must be non-negative with shape {want}, got "
                f"shape {tuple(w.shape)}."
            )
    if pairwise.shape != (n_labels, n_labels) or (pairwise < 0).any() or (
        np.diag(pairwise) != 0
    ).any() or not np.allclose(pairwise, pairwise.T):
        raise ConfigError(
            "the pairwise label cost must be an L x L symmetric non-negative matrix with a "
            "zero diagonal (a semi-metric)."
        )


def _swap_move(
    labels: np.ndarray,
    unary: np.ndarray,
    weights: Sequence[np.ndarray],
    pairwise: np.ndarray,
    a: int,
    b: int,
) -> np.ndarray:
    """The best labeling reachable by letting every node labelled a or b take a or b."""
    maxflow = _maxflow()
    ndim = labels.ndim
    active = (labels == a) | (labels == b)
    # cost of label b (1, "sink") and label a (0, "source") per node
    cost_b = unary[..., b].astype(np.float64).copy()
    cost_a = unary[..., a].astype(np.float64).copy()
    graph = maxflow.Graph[float]()
    ids = graph.add_grid_nodes(labels.shape)
    for axis, w in enumerate(weights):
        first, second = _edge_slices(axis, ndim)
        act_p, act_q = active[first], active[second]
        lab_p, lab_q = labels[first], labels[second]
        both = act_p & act_q
        # p active, q fixed: the edge becomes unary terms of p (and symmetrically)
        only_p = act_p & ~act_q
        only_q = act_q & ~act_p
        cost_a[first] += np.where(only_p, w * pairwise[a, lab_q], 0.0)
        cost_b[first] += np.where(only_p, w * pairwise[b, lab_q], 0.0)
        cost_a[second] += np.where(only_q, w * pairwise[a, lab_p], 0.0)
        cost_b[second] += np.where(only_q, w * pairwise[b, lab_p], 0.0)
        # both active: V(a, a) = V(b, b) = 0; table (0,1) -> w V(a,b), (1,0) -> w V(b,a).
        # Exact decomposition: U_p(1) += C, U_q(1) -= C, edge p->q of capacity B + C.
        cap_ab = np.where(both, w * pairwise[a, b], 0.0)
        cap_ba = np.where(both, w * pairwise[b, a], 0.0)
        cost_b[first] += cap_ba
        cost_b[second] -= cap_ba
        caps = np.zeros(labels.shape, dtype=np.float64)
        caps[first] = cap_ab + cap_ba
        structure = np.zeros((3,) * ndim)
        centre = [1] * ndim
        centre[axis] = 2
        structure[tuple(centre)] = 1
        graph.add_grid_edges(ids, weights=caps, structure=structure, symmetric=False)
    big = 1e9 * (1.0 + float(np.abs(unary).max()))
    # inactive nodes are pinned to the source side (their label does not change)
    cost_b = np.where(active, cost_b, big)
    cost_a = np.where(active, cost_a, 0.0)
    low = np.minimum(cost_a, cost_b)
    graph.add_grid_tedges(ids, cost_b - low, cost_a - low)
    graph.maxflow()
    to_b = graph.get_grid_segments(ids)
    out = labels.copy()
    out[active] = np.where(to_b[active], b, a)
    return out


def grid_labeling(
    unary: np.ndarray,
    weights: Sequence[np.ndarray],
    pairwise: np.ndarray,
    *,
    init: np.ndarray | None = None,
    max_cycles: int = 10,
) -> np.ndarray:
    """Minimise ``sum U[p, z_p] + sum w_pq V[z_p, z_q]`` over a 1-D or 2-D block grid.

    Two labels: the exact minimum by one minimum cut. More labels: alpha-beta swap moves from
    ``init`` (default: each node's cheapest label), each the exact best swap of a label pair,
    until a whole cycle over the pairs lowers the energy by no more than 1e-12 relative, or
    ``max_cycles`` cycles. Returns int64 labels of the grid's shape.

    Example:
        >>> grid_labeling(np.array([[1.0, 0.0], [0.0, 1.0]]), [np.array([5.0])],
        ...               np.array([[0.0, 1.0], [1.0, 0.0]])).tolist()
        [0, 0]
    """
    unary = np.asarray(unary, dtype=np.float64)
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    pairwise = np.asarray(pairwise, dtype=np.float64)
    _check_energy(unary, weights, pairwise)
    n_labels = unary.shape[-1]
    labels = (np.argmin(unary, axis=-1) if init is None else np.asarray(init)).astype(np.int64)
    if n_labels == 1:
        return labels
    if n_labels == 2:
        return _swap_move(np.zeros_like(labels), unary, weights, pairwise, 0, 1)
    energy = grid_energy(labels, unary, weights, pairwise)
    for _ in range(max_cycles):
        start = energy
        for a, b in combinations(range(n_labels), 2):
            proposal = _swap_move(labels, unary, weights, pairwise, a, b)
            new = grid_energy(proposal, unary, weights, pairwise)
            if new < energy:
                labels, energy = proposal, new
        if start - energy <= 1e-12 * max(1.0, abs(start)):
            break
    return labels


# ---------------------------------------------------------------------- Puzzle Mix
def _seam_costs(x_self: Tensor, x_partner: Tensor, grid: tuple[int, ...]) -> list[Tensor]:
    """Per axis, ``d[a, b]``: mean |difference| across each block seam between source a at the
    first block and source b at the second (0 = partner, 1 = self); shape ``(2, 2, *edges)``."""
    out = []
    sources = (x_partner, x_self)  # (C, *spatial) each
    spatial = tuple(x_self.shape[1:])
    for axis, n in enumerate(grid):
        block = spatial[axis] // n
        last = torch.arange(1, n, device=x_self.device) * block - 1  # last line of block p
        table = []
        for a in sources:
            row = []
            for b in sources:
                lo = a.index_select(axis + 1, last)
                hi = b.index_select(axis + 1, last + 1)
                diff = (lo - hi).abs().mean(0)  # (*spatial with axis -> n - 1)
                # average the seam over each block's extent along the other axes
                for other, m in enumerate(grid):
                    if other != axis:
                        size = diff.shape[other]
                        diff = diff.reshape(
                            *diff.shape[:other], m, size // m, *diff.shape[other + 1 :]
                        ).mean(other + 1)
                row.append(diff)
            table.append(torch.stack(row))
        out.append(torch.stack(table))
    return out


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
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Puzzle Mix's mask energy (Kim et al., ICML 2020) for one pair: ``(unary, weights, V)``.

    Label ``l`` of a block gives ``x`` the weight ``w_l = 1 - l / (L - 1)`` there. Terms:

    - saliency lost: ``w_l s_partner + (1 - w_l) s_self`` with each map (block saliency,
      shape = the grid) normalised to sum 1;
    - label prior: ``eta * -log Binomial(L - 1 - l; L - 1, lam) / n_blocks``, so the mask
      keeps about ``lam`` of ``x``;
    - smoothness: ``beta' = beta / (16 n)`` on every edge (``n`` blocks along the longest
      axis), times ``V[l, l'] = (l - l')^2 / (L - 1)^2``;
    - data-local term (when the inputs ``(C, *spatial)`` are given): ``gamma beta'`` times the
      mean absolute difference across each seam for each pair of sources, split exactly into
      unary terms plus a seam weight (clamped at 0 so the energy stays submodular).

    Example:
        >>> u, w, v = puzzle_energy(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 0.5,
        ...                         n_labels=2, beta=0.0, gamma=0.0, eta=0.0)
        >>> grid_labeling(u, w, v).tolist()       # each block keeps its more salient source
        [[0, 1]]
    """
    if n_labels < 2 or not 0.0 <= lam <= 1.0:
        raise ConfigError(f"n_labels={n_labels} must be >= 2 and lam={lam} in [0, 1].")
    grid = tuple(saliency_self.shape)
    n_blocks = math.prod(grid)
    s_self = saliency_self.detach().double().cpu()
    s_partner = saliency_partner.detach().double().cpu()
    s_self = s_self / s_self.sum().clamp_min(1e-300)
    s_partner = s_partner / s_partner.sum().clamp_min(1e-300)
    levels = 1.0 - torch.arange(n_labels, dtype=torch.float64) / (n_labels - 1)  # weight of x
    k = n_labels - 1
    prior = torch.tensor(
        [
            -math.log(math.comb(k, i) * lam ** (k - i) * (1 - lam) ** i + 1e-8)
            for i in range(n_labels)
        ],
        dtype=torch.float64,
    )
    cost_self = s_partner.clone()  # charged with the weight of x: the partner's lost saliency
    cost_partner = s_self.clone()
    beta_eff = beta / (16.0 * max(grid))
    weights = []
    if gamma > 0 and x_self is not None and x_partner is not None:
        seams = _seam_costs(x_self.detach().double().cpu(), x_partner.detach().double().cpu(),
                            grid)
    else:
        seams = [None] * len(grid)
    for axis, seam in enumerate(seams):
        first, second = _edge_slices(axis, len(grid))
        edge_shape = tuple(s - 1 if a == axis else s for a, s in enumerate(grid))
        w = torch.full(edge_shape, beta_eff, dtype=torch.float64)
        if seam is not None:
            t = gamma * beta_eff * seam  # t[a, b]: source a at p, b at q (1 = self)
            # exact reparametrisation: u_p(a) = (t[a,0] + t[a,1]) / 2, u_q(b) likewise, and a
            # seam weight (t01 + t10 - t00 - t11) / 2 when the sources differ
            cost_self[first] += (t[1, 0] + t[1, 1]) / 2
            cost_partner[first] += (t[0, 0] + t[0, 1]) / 2
            cost_self[second] += (t[0, 1] + t[1, 1]) / 2
            cost_partner[second] += (t[0, 0] + t[1, 0]) / 2
            w = w + ((t[0, 1] + t[1, 0] - t[0, 0] - t[1, 1]) / 2).clamp_min(0.0)
        weights.append(w.numpy())
    unary = (
        levels * cost_self[..., None]
        + (1 - levels) * cost_partner[..., None]
        + eta * prior / n_blocks
    )
    labels = torch.arange(n_labels, dtype=torch.float64)
    pairwise = (labels[:, None] - labels[None, :]) ** 2 / (n_labels - 1) ** 2
    return unary.numpy(), weights, pairwise.numpy()


# ---------------------------------------------------------------------- Co-Mixup
def comixup_objective(
    labels: np.ndarray,
    cost: np.ndarray,
    compat: np.ndarray,
    *,
    beta: float,
    gamma: float,
    threshold: float | None = None,
) -> float:
    """Co-Mixup's objective of an assignment (Kim et al., ICLR 2021).

    ``labels`` ``(m_out, *grid)``: the input each block of each output comes from; ``cost``
    ``(m_in, *grid)``: per-block cost (negative saliency plus the prior); with ``o_j`` the
    per-input block counts of output j:
    ``sum_j sum_p cost[z_jp, p] + beta * #(unequal neighbours) + gamma sum_{j != j'} o_j^T A o_j'``.
    With ``threshold`` the diversity term of output j only counts inputs whose load from the
    other outputs exceeds it (the released "hard" threshold).

    Example:
        >>> comixup_objective(np.array([[0], [0]]), np.zeros((1, 1)), np.eye(1), beta=1.0,
        ...                   gamma=1.0)
        2.0
    """
    m_in = cost.shape[0]
    grid_axes = tuple(range(1, labels.ndim))
    total = 0.0
    counts = np.stack([(labels == i).sum(axis=grid_axes) for i in range(m_in)], axis=1)
    for j in range(labels.shape[0]):
        total += float(np.take_along_axis(cost, labels[j][None], axis=0).sum())
        for axis in range(labels.ndim - 1):
            a, b = _edge_slices(axis, labels.ndim - 1)
            total += beta * float((labels[j][a] != labels[j][b]).sum())
    others = counts.sum(0, keepdims=True) - counts  # load from the other outputs
    load = others @ compat.T
    if threshold is not None:
        load = np.where(load > threshold, load, 0.0)
    total += gamma * float((load * counts).sum())
    return total


def comixup_assignment(
    cost: np.ndarray,
    compat: np.ndarray,
    *,
    beta: float,
    gamma: float,
    threshold: float | None,
    init: np.ndarray,
    n_iter: int = 4,
) -> np.ndarray:
    """Co-Mixup's assignment by the paper's modular approximation.

    For each output j in turn, the diversity term is replaced by its modular (linear) form at
    the other outputs' current loads ``p``: block cost ``+ 2 gamma (A p)_i`` for taking input
    i (only where ``(A p)_i`` exceeds ``threshold``, when given); the resulting Potts labeling
    (``beta`` per unequal neighbour pair) is solved by PyMaxflow's alpha-expansion (exact for
    two inputs). ``n_iter`` sweeps over the
    outputs, stopping early when a sweep changes nothing. ``init`` ``(m_out, *grid)`` is the
    starting assignment. Returns the assignment, int64 ``(m_out, *grid)``.

    Example:
        >>> cost = np.array([[[-1.0, 0.0]], [[0.0, -1.0]]])     # 2 inputs, a 1 x 2 grid
        >>> comixup_assignment(cost, np.eye(2), beta=0.0, gamma=0.0, threshold=None,
        ...                    init=np.zeros((2, 1, 2), dtype=np.int64))[0].tolist()
        [[0, 1]]
    """
    m_in = cost.shape[0]
    labels = np.asarray(init, dtype=np.int64).copy()
    axes = tuple(range(1, labels.ndim))
    counts = np.stack([(labels == i).sum(axis=axes) for i in range(m_in)], axis=1)
    unary_base = np.moveaxis(cost, 0, -1).astype(np.float64)  # (*grid, m_in)
    potts = beta * (1.0 - np.eye(m_in))
    fastmin = _maxflow().fastmin
    for _ in range(n_iter):
        changed = False
        for j in range(labels.shape[0]):
            others = counts.sum(0) - counts[j]
            load = compat @ others
            if threshold is not None:
                load = np.where(load > threshold, load, 0.0)
            unary = unary_base + 2.0 * gamma * load
            # Potts costs are a metric: PyMaxflow's alpha-expansion (uniform edge weight beta)
            start = labels[j].astype(np.int32)
            new = fastmin.aexpansion_grid(unary, potts, labels=start).astype(np.int64)
            if not np.array_equal(new, labels[j]):
                changed = True
                labels[j] = new
                counts[j] = np.array([(new == i).sum() for i in range(m_in)])
        if not changed:
            break
    return labels
