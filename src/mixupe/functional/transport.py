"""Optimal transport for mixing: Sinkhorn alignment (AlignMix) and block transport (Puzzle Mix).

- :func:`sinkhorn` solves entropic optimal transport between uniform marginals in the log
  domain, batched, in torch (differentiable, no device synchronisation).
- :func:`alignment_plan` and :func:`align_features` use it to re-arrange a partner's feature
  vectors onto a sample's positions (or the reverse), as AlignMix does before interpolating.
- :func:`block_transport` solves Puzzle Mix's exact assignment of blocks with the ``POT``
  package (``pip install POT``) on the host, and :func:`move_blocks` applies it.

Example:
    >>> import torch
    >>> from mixupe.functional import transport as MT
    >>> plan = MT.sinkhorn(torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)),
    ...                    eps=0.1)
    >>> bool(torch.allclose(plan.sum(-1), torch.full((2, 4), 0.25), atol=1e-6))
    True
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from mixupe.errors import ConfigError
from mixupe.functional._optional import require

__all__ = [
    "align_features",
    "alignment_plan",
    "block_cost_matrix",
    "block_transport",
    "from_blocks",
    "move_blocks",
    "sinkhorn",
    "to_blocks",
]


def sinkhorn(
    cost: Tensor, *, eps: float = 0.1, n_iter: int = 100, log_domain: bool = True
) -> Tensor:
    """Entropic OT plans between uniform marginals: ``argmin <P, M> - eps H(P)``.

    ``cost`` is ``(B, n, m)``; returns plans ``(B, n, m)`` with rows summing to ``1/n`` and
    columns to ``1/m`` (exactly for the columns after the last iteration; the rows to within
    the convergence of ``n_iter`` iterations). ``log_domain=True`` iterates on log-scalings
    (stable for any ``cost / eps``); ``False`` iterates on the kernel ``exp(-cost / eps)``
    with matrix products in float64, several times faster, for ``cost / eps`` below about
    500 (the kernel must not underflow).

    Example:
        >>> p = sinkhorn(torch.zeros(1, 2, 2), eps=1.0)
        >>> p.tolist()
        [[[0.25, 0.25], [0.25, 0.25]]]
    """
    if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
        raise ConfigError(f"eps={eps!r} is invalid: the entropic weight must be finite and > 0.")
    if not (isinstance(n_iter, int) and n_iter >= 1):
        raise ConfigError(f"n_iter={n_iter!r} is invalid: pass an int >= 1.")
    _, n, m = cost.shape
    if not log_domain:
        k = torch.exp(-cost.double() / eps)
        u = torch.full(cost.shape[:2], 1.0 / n, dtype=k.dtype, device=k.device)
        v = torch.full((cost.shape[0], m), 1.0 / m, dtype=k.dtype, device=k.device)
        for _ in range(n_iter):
            u = (1.0 / n) / torch.bmm(k, v.unsqueeze(2)).squeeze(2)
            v = (1.0 / m) / torch.bmm(k.transpose(1, 2), u.unsqueeze(2)).squeeze(2)
        return (u.unsqueeze(2) * k * v.unsqueeze(1)).to(cost.dtype)
    log_a = -math.log(n)
    log_b = -math.log(m)
    kernel = -cost / eps
    f = torch.zeros(cost.shape[:2], dtype=cost.dtype, device=cost.device)
    g = torch.zeros((cost.shape[0], m), dtype=cost.dtype, device=cost.device)
    for _ in range(n_iter):
        f = log_a - torch.logsumexp(kernel + g[:, None, :], dim=2)
        g = log_b - torch.logsumexp(kernel + f[:, :, None], dim=1)
    return torch.exp(kernel + f[:, :, None] + g[:, None, :])


def alignment_plan(
    h: Tensor, partner: Tensor, *, eps: float = 0.1, n_iter: int = 100,
    scale_cost: bool = False,
) -> Tensor:
    """AlignMix's assignment matrix ``n P`` ``(B, n, n)`` between the positions of ``h``
    (rows) and of ``partner`` (columns), without gradient.

    ``h`` and ``partner`` are ``(B, C, *positions)`` feature maps; the cost between position
    i of ``h`` and position j of ``partner`` is the squared distance of their C-vectors, as
    the authors compute it; P is the Sinkhorn plan of weight ``eps`` between uniform
    marginals (log domain, ``n_iter`` iterations), times the number of positions ``n`` so
    that a permutation gives a 0/1 matrix. ``scale_cost=True`` divides the cost by its
    per-sample maximum first, which makes ``eps`` scale-free but the plans much blurrier at
    the authors' eps = 0.1 (not the authors' choice).

    Example:
        >>> h = torch.tensor([[[0.0, 10.0]]])
        >>> alignment_plan(h, h.flip(-1)).round().tolist()
        [[[0.0, 1.0], [1.0, 0.0]]]
    """
    b, c = h.shape[:2]
    with torch.no_grad():
        work = torch.promote_types(h.dtype, torch.float32)
        a_vec = h.detach().reshape(b, c, -1).transpose(1, 2).to(work)  # (B, n, C)
        p_vec = partner.detach().reshape(b, c, -1).transpose(1, 2).to(work)
        cost = torch.cdist(a_vec, p_vec) ** 2
        if scale_cost:
            cost = cost / cost.amax(dim=(1, 2), keepdim=True).clamp_min(torch.finfo(work).tiny)
            # the cost lies in [0, 1], so the kernel exp(-cost / eps) is safe unless eps is tiny
            plan = sinkhorn(cost, eps=eps, n_iter=n_iter, log_domain=eps < 1 / 400)
        else:
            plan = sinkhorn(cost, eps=eps, n_iter=n_iter)
        return plan * a_vec.shape[1]


def align_features(
    h: Tensor, partner: Tensor, *, eps: float = 0.1, n_iter: int = 100,
    scale_cost: bool = False, plan: Tensor | None = None,
) -> Tensor:
    """AlignMix's alignment: ``partner``'s feature vectors moved onto ``h``'s positions.

    With the assignment matrix ``n P`` of :func:`alignment_plan` (or ``plan=``, computed
    before), the result at position i is ``sum_j n P_ij partner_j``. It is differentiable in
    ``partner`` (the plan is a re-arrangement, without gradient).

    Example:
        >>> h = torch.tensor([[[0.0, 10.0]]])              # one sample, 1 channel, 2 positions
        >>> align_features(h, h.flip(-1)).round().tolist()   # undoes the swap
        [[[0.0, 10.0]]]
    """
    if plan is None:
        plan = alignment_plan(h, partner, eps=eps, n_iter=n_iter, scale_cost=scale_cost)
    b, c = h.shape[:2]
    p_vec = partner.reshape(b, c, -1).transpose(1, 2)
    moved = torch.bmm(plan.to(partner.dtype), p_vec)  # (B, n, C)
    return moved.transpose(1, 2).reshape(h.shape)


# ---------------------------------------------------------------------- blocks
def to_blocks(x: Tensor, grid: tuple[int, ...]) -> Tensor:
    """``(B, C, *spatial)`` -> ``(B, n_blocks, C, *block)``, blocks in row-major grid order.

    Example:
        >>> to_blocks(torch.arange(4.).reshape(1, 1, 4), (2,))[0, :, 0].tolist()
        [[0.0, 1.0], [2.0, 3.0]]
    """
    b, c = x.shape[:2]
    spatial = tuple(x.shape[2:])
    if len(grid) != len(spatial) or any(s % n for s, n in zip(spatial, grid, strict=True)):
        raise ConfigError(
            f"a grid of {grid} blocks does not tile inputs of spatial shape {spatial}: choose "
            "grid sizes that divide every spatial size."
        )
    block = tuple(s // n for s, n in zip(spatial, grid, strict=True))
    if len(grid) == 1:
        return x.reshape(b, c, grid[0], block[0]).permute(0, 2, 1, 3)
    t = x.reshape(b, c, grid[0], block[0], grid[1], block[1]).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b, grid[0] * grid[1], c, block[0], block[1])


def from_blocks(blocks: Tensor, grid: tuple[int, ...]) -> Tensor:
    """The inverse of :func:`to_blocks`.

    Example:
        >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
        >>> bool(torch.equal(from_blocks(to_blocks(x, (2, 2)), (2, 2)), x))
        True
    """
    b, _, c = blocks.shape[:3]
    block = tuple(blocks.shape[3:])
    if len(grid) == 1:
        return blocks.permute(0, 2, 1, 3).reshape(b, c, grid[0] * block[0])
    t = blocks.reshape(b, grid[0], grid[1], c, block[0], block[1]).permute(0, 3, 1, 4, 2, 5)
    return t.reshape(b, c, grid[0] * block[0], grid[1] * block[1])


def block_cost_matrix(grid: tuple[int, ...]) -> np.ndarray:
    """Squared distances between block positions, divided by ``(n - 1)^2`` for ``n`` blocks
    along the longest axis (Puzzle Mix's transport cost). Shape ``(n_blocks, n_blocks)``.

    Example:
        >>> block_cost_matrix((2,)).tolist()
        [[0.0, 1.0], [1.0, 0.0]]
    """
    coords = np.stack(np.meshgrid(*[np.arange(n) for n in grid], indexing="ij"), -1)
    coords = coords.reshape(-1, len(grid)).astype(np.float64)
    dist = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    return dist / max(max(grid) - 1, 1) ** 2


def block_transport(
    saliency: Tensor, region: Tensor, *, t_eps: float = 0.8
) -> Tensor:
    """Puzzle Mix's transport: per sample, the assignment of source blocks to positions that
    minimises ``sum_i t_eps C[i, pi(i)] - s_i region[pi(i)]``, solved exactly by ``POT``'s
    network simplex. ``saliency`` and ``region`` are ``(B, *grid)`` (``region``: 1 where this
    sample will show). Returns int64 ``(B, n_blocks)``: ``source[b, j]``, the block moved to
    position j. Runs on the host (synchronises).

    Example:
        >>> s = torch.tensor([[0.0, 1.0]]); where = torch.tensor([[1.0, 0.0]])
        >>> block_transport(s, where, t_eps=0.1).tolist()   # the salient block moves left
        [[1, 0]]
    """
    ot = require("ot", "Puzzle Mix's transport needs the optimal-transport package POT: run "
                 "`pip install POT` (or `pip install 'mixupe[family]'`), or pass transport=False.")
    grid = tuple(saliency.shape[1:])
    n = math.prod(grid)
    cost_pos = t_eps * block_cost_matrix(grid)
    sal = saliency.detach().double().reshape(-1, n).cpu().numpy()
    reg = region.detach().double().reshape(-1, n).cpu().numpy()
    uniform = np.full(n, 1.0 / n)
    sources = np.empty((sal.shape[0], n), dtype=np.int64)
    for b in range(sal.shape[0]):
        cost = cost_pos - sal[b][:, None] * reg[b][None, :]
        plan = ot.emd(uniform, uniform, cost)
        # a vertex of the assignment polytope: one source per position
        sources[b] = plan.argmax(axis=0)
    return torch.from_numpy(sources).to(saliency.device)


def move_blocks(x: Tensor, sources: Tensor, grid: tuple[int, ...]) -> Tensor:
    """Re-arrange the blocks of ``x`` ``(B, C, *spatial)``: position j gets block
    ``sources[b, j]``.

    Example:
        >>> move_blocks(torch.arange(4.).reshape(1, 1, 4), torch.tensor([[1, 0]]), (2,)).tolist()
        [[[2.0, 3.0, 0.0, 1.0]]]
    """
    blocks = to_blocks(x, grid)
    index = sources.reshape(*sources.shape, *([1] * (blocks.dim() - 2))).expand_as(blocks)
    return from_blocks(torch.gather(blocks, 1, index), grid)
