"""Labelings of block grids by graph cuts: the energies, the alpha-beta swap and the solvers.

Two solvers: ``'gco'``, the authors' (GCO's alpha-beta swap, ``pip install gco-wrapper``),
and ``'maxflow'`` (``pip install PyMaxflow``), this module's own alpha-beta swap
(:func:`grid_labeling`) or PyMaxflow's alpha-expansion. Every energy has the form

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

from collections.abc import Sequence
from itertools import combinations
from types import ModuleType

import numpy as np

from mixupe.errors import ConfigError
from mixupe.functional._optional import require

__all__ = ["SOLVERS", "check_solver", "gco_swap", "grid_energy", "grid_labeling"]


def _maxflow() -> ModuleType:
    return require("maxflow", "Puzzle Mix and Co-Mixup need the max-flow package PyMaxflow: run "
                   "`pip install PyMaxflow` (or `pip install 'mixupe[family]'`).")


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


# ---------------------------------------------------------------------- GCO
SOLVERS = ("gco", "maxflow")


def _gco() -> ModuleType:
    return require("gco", "solver='gco' (the authors' alpha-beta swap) needs the package "
                   "gco-wrapper: run `pip install gco-wrapper` (or `pip install "
                   "'mixupe[family]'`), or pass solver='maxflow' for the PyMaxflow solver.")


def check_solver(solver: str) -> str:
    """Raise :class:`ConfigError` unless ``solver`` is one of :data:`SOLVERS`."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver={solver!r} is invalid: pass one of {SOLVERS} ('gco', the "
                          "authors' GCO alpha-beta swap, needs `pip install gco-wrapper`).")
    return solver


def gco_swap(unary: np.ndarray, weights: Sequence[np.ndarray], pairwise: np.ndarray) -> np.ndarray:
    """GCO's alpha-beta swap (``gco-wrapper``), started from label 0 everywhere, on a 1-D or
    2-D grid, called with the arrays' own dtypes (GCO rounds float energies to integers:
    unary terms to 1e-5, edge weights to 1e-3, ``pairwise`` to 1e-2). Returns int64 labels.

    Example:
        >>> u = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
        >>> gco_swap(u, [np.array([0.1], dtype=np.float32)],
        ...          np.float32([[0, 1], [1, 0]])).tolist()  # doctest: +SKIP
        [0, 1]
    """
    gco = _gco()
    grid = unary.shape[:-1]
    if len(grid) == 1:
        unary = unary[None]
        weights = [np.zeros((0, grid[0]), dtype=weights[0].dtype), weights[0][None]]
    labels = gco.cut_grid_graph(np.ascontiguousarray(unary), pairwise,
                                np.ascontiguousarray(weights[0]),
                                np.ascontiguousarray(weights[1]), algorithm="swap")
    return np.asarray(labels, dtype=np.int64).reshape(grid)
