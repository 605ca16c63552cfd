"""Labelings of block grids by graph cuts: Puzzle Mix's mask and Co-Mixup's batch assignment.

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

import math
from collections.abc import Sequence
from itertools import combinations
from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from mixupe.errors import ConfigError
from mixupe.functional._optional import require

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
