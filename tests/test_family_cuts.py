"""Graph cuts (PyMaxflow) checked by brute force, Puzzle Mix's energy, transport and mixing,
and Co-Mixup's modular-approximation sweeps, on tiny grids."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

import mixupe
from mixupe.functional import cuts as MC
from mixupe.functional import transport as MT

pytest.importorskip("maxflow")
pytest.importorskip("ot")


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def all_labelings(shape: tuple[int, ...], n_labels: int):
    for flat in itertools.product(range(n_labels), repeat=math.prod(shape)):
        yield np.array(flat).reshape(shape)


def energy_by_loops(z, unary, weights, pairwise) -> float:
    """The grid energy written out edge by edge (4-neighbourhood)."""
    total = sum(unary[(*idx, z[idx])] for idx in np.ndindex(z.shape))
    for axis, w in enumerate(weights):
        for idx in np.ndindex(w.shape):
            nxt = list(idx)
            nxt[axis] += 1
            total += w[idx] * pairwise[z[idx], z[tuple(nxt)]]
    return float(total)


def random_energy(shape, n_labels, seed):
    r = rng(seed)
    unary = r.normal(size=(*shape, n_labels))
    weights = [r.uniform(0, 1.5, size=tuple(s - 1 if k == a else s for k, s in enumerate(shape)))
               for a in range(len(shape))]
    lab = np.arange(n_labels)
    pairwise = (lab[:, None] - lab[None, :]) ** 2 / max(n_labels - 1, 1) ** 2
    return unary, weights, pairwise


@pytest.mark.parametrize("shape", [(3, 3), (7,), (2, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_graph_cut_is_the_brute_force_minimum(shape, seed):
    unary, weights, pairwise = random_energy(shape, 2, seed)
    labels = MC.grid_labeling(unary, weights, pairwise)
    best = min(energy_by_loops(z, unary, weights, pairwise) for z in all_labelings(shape, 2))
    assert math.isclose(energy_by_loops(labels, unary, weights, pairwise), best, abs_tol=1e-9)
    assert math.isclose(MC.grid_energy(labels, unary, weights, pairwise), best, abs_tol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_multilabel_swap_result_admits_no_improving_swap(seed):
    shape, n_labels = (2, 3), 3
    unary, weights, pairwise = random_energy(shape, n_labels, seed)
    init = rng(seed + 10).integers(0, n_labels, size=shape)
    labels = MC.grid_labeling(unary, weights, pairwise, init=init)
    e = energy_by_loops(labels, unary, weights, pairwise)
    assert e <= energy_by_loops(init, unary, weights, pairwise) + 1e-12
    for a, b in itertools.combinations(range(n_labels), 2):
        movable = [idx for idx in np.ndindex(shape) if labels[idx] in (a, b)]
        for choice in itertools.product((a, b), repeat=len(movable)):
            z = labels.copy()
            for idx, lab in zip(movable, choice, strict=True):
                z[idx] = lab
            assert energy_by_loops(z, unary, weights, pairwise) >= e - 1e-9


def test_grid_labeling_rejects_a_non_metric_cost():
    with pytest.raises(mixupe.ConfigError, match="semi-metric"):
        MC.grid_labeling(np.zeros((2, 2)), [np.ones(1)], np.array([[1.0, 0.0], [0.0, 1.0]]))


def test_puzzle_energy_without_priors_keeps_the_more_salient_source():
    r = rng(3)
    s_self, s_partner = torch.tensor(r.uniform(size=(4, 4))), torch.tensor(r.uniform(size=(4, 4)))
    unary, weights, pairwise = MC.puzzle_energy(s_self, s_partner, 0.5, n_labels=2, beta=0.0,
                                                gamma=0.0, eta=0.0)
    labels = MC.grid_labeling(unary, weights, pairwise)
    # label 0 keeps x itself; it should be chosen exactly where x's block is the more salient
    more_salient = s_self / s_self.sum() > s_partner / s_partner.sum()
    assert np.array_equal(labels == 0, more_salient.numpy())


def test_puzzle_label_prior_follows_lambda():
    s = torch.ones(4, 4)
    for lam, want in ((0.95, 0), (0.05, 1)):
        unary, weights, pairwise = MC.puzzle_energy(s, s, lam, n_labels=2, eta=5.0)
        assert (MC.grid_labeling(unary, weights, pairwise) == want).all()


@pytest.mark.parametrize("case", ["apart", "close"])
def test_puzzle_data_term_reparametrisation_is_exact_up_to_a_constant(case):
    r = rng(4)
    grid = (2, 2)
    s_self, s_partner = torch.tensor(r.uniform(size=grid)), torch.tensor(r.uniform(size=grid))
    x_self = torch.tensor(r.normal(size=(2, 4, 4)))
    if case == "apart":
        # two sources far apart in value: every seam weight (t01 + t10 - t00 - t11) / 2 > 0
        x_partner = torch.tensor(r.normal(size=(2, 4, 4))) + 5.0
    else:
        # nearly the same source: some seam weights are negative, but the total edge weight
        # beta' + seam weight stays positive, so nothing may be clamped (the release clamps
        # nothing either)
        x_partner = x_self + 0.3 * torch.tensor(r.normal(size=(2, 4, 4)))
    seams = MC._seam_costs(x_self[None], x_partner[None], grid)
    sign = [t[0, 0, 1] + t[0, 1, 0] - t[0, 0, 0] - t[0, 1, 1] for t in seams]
    assert bool((torch.cat([v.flatten() for v in sign]) < 0).any()) == (case == "close")
    beta, gamma, eta, lam = 0.8, (3.0 if case == "apart" else 0.5), 0.4, 0.3
    unary, weights, pairwise = MC.puzzle_energy(s_self, s_partner, lam, n_labels=2, beta=beta,
                                                gamma=gamma, eta=eta, x_self=x_self,
                                                x_partner=x_partner, neigh_size=1)
    assert all(bool((w > 0).all()) for w in weights)
    b_eff = beta / (16 * 2)
    ns, np_ = s_self / s_self.sum(), s_partner / s_partner.sum()

    def direct(z):  # z = 1: the partner shows in that block
        e = 0.0
        src = {0: x_self, 1: x_partner}
        for idx in np.ndindex(grid):
            w_self = 1 - z[idx]
            e += float(w_self * np_[idx] + (1 - w_self) * ns[idx])
            e += eta * -math.log((lam if z[idx] == 0 else 1 - lam) + 1e-8) / 4
        # seams along axis 0: block (0, j) above block (1, j)
        for j in range(2):
            a, b = src[z[0, j]], src[z[1, j]]
            d = (a[:, 1, 2 * j : 2 * j + 2] - b[:, 2, 2 * j : 2 * j + 2]).abs().mean()
            e += b_eff * (z[0, j] != z[1, j]) + gamma * b_eff * float(d)
        for i in range(2):
            a, b = src[z[i, 0]], src[z[i, 1]]
            d = (a[:, 2 * i : 2 * i + 2, 1] - b[:, 2 * i : 2 * i + 2, 2]).abs().mean()
            e += b_eff * (z[i, 0] != z[i, 1]) + gamma * b_eff * float(d)
        return e

    diffs = [MC.grid_energy(z, unary, weights, pairwise) - direct(z)
             for z in all_labelings(grid, 2)]
    assert np.ptp(diffs) < 1e-9


def test_block_transport_is_the_brute_force_assignment():
    r = rng(5)
    grid = (2, 2)
    sal = torch.tensor(r.uniform(size=(1, *grid)))
    region = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    src = MT.block_transport(sal, region, t_eps=0.3)[0].tolist()
    cost = 0.3 * MT.block_cost_matrix(grid)
    s, z = sal.reshape(-1).numpy(), region.reshape(-1).numpy()

    def total(sources):  # position j receives block sources[j]
        return sum(cost[i, j] - s[i] * z[j] for j, i in enumerate(sources))

    best = min(total(p) for p in itertools.permutations(range(4)))
    assert sorted(src) == [0, 1, 2, 3] and math.isclose(total(src), best, abs_tol=1e-12)


def test_move_blocks_matches_a_loop():
    x = torch.arange(2 * 1 * 4 * 6, dtype=torch.float64).reshape(2, 1, 4, 6)
    sources = torch.tensor([[5, 4, 3, 2, 1, 0], [0, 2, 1, 3, 5, 4]])
    out = MT.move_blocks(x, sources, (2, 3))
    for b in range(2):
        for j in range(6):
            i = int(sources[b, j])
            (pr, pc), (sr, sc) = divmod(j, 3), divmod(i, 3)
            assert torch.equal(out[b, :, 2 * pr : 2 * pr + 2, 2 * pc : 2 * pc + 2],
                               x[b, :, 2 * sr : 2 * sr + 2, 2 * sc : 2 * sc + 2])


# ---------------------------------------------------------------------- Puzzle Mix
def linear_net(d: int, k: int = 3) -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()


def test_input_gradient_is_the_analytic_gradient_and_leaves_the_model_alone():
    net = linear_net(8)
    x = torch.randn(4, 2, 2, 2, dtype=torch.float64)
    targets = torch.eye(3, dtype=torch.float64)[[0, 1, 2, 0]]
    grad = mixupe.objectives.saliency_guided.input_gradient(net, x, targets)
    w = net[1].weight
    p = torch.softmax(net(x), 1)
    want = ((p - targets) @ w).reshape(x.shape)  # the summed loss's gradient
    torch.testing.assert_close(grad, want.detach())
    assert all(q.grad is None for q in net.parameters()) and net.training


def test_puzzlemix_mixes_by_its_mask_and_reports_the_kept_fraction():
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    perm = torch.tensor([2, 0, 1])
    net = linear_net(128)
    mask = torch.tensor([[[0.0, 0.5], [1.0, 0.0]], [[1.0, 1.0], [0.5, 0.5]],
                         [[0.0, 0.0], [0.0, 1.0]]], dtype=torch.float64)
    pm = mixupe.PuzzleMix(num_classes=3, transport=False)
    out = pm(net, x, y, perm=perm, mask=mask)
    want = x.clone()
    for b in range(3):
        for i in range(2):
            for j in range(2):
                w = float(mask[b, i, j])
                blk = (b, slice(None), slice(4 * i, 4 * i + 4), slice(4 * j, 4 * j + 4))
                want[blk] = (1 - w) * x[blk] + w * x[(int(perm[b]), *blk[1:])]
    lam = 1 - mask.reshape(3, -1).mean(1)
    torch.testing.assert_close(out.lam, lam)
    logits = net(want)
    ce = lambda t: torch.logsumexp(logits, 1) - logits.gather(1, t[:, None])[:, 0]  # noqa: E731
    torch.testing.assert_close(out.loss, (lam * ce(y) + (1 - lam) * ce(y[perm])).mean())


def test_puzzlemix_drawn_masks_have_the_right_levels_and_counted_lambda():
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    net = linear_net(64).float()
    for transport in (False, True):
        pm = mixupe.PuzzleMix(num_classes=3, grid_sizes=(4,), transport=transport, seed=0)
        out = pm(net, x, torch.tensor([0, 1, 2, 0]))
        levels = set(out.mask.unique().tolist())
        assert levels <= {0.0, 0.5, 1.0}
        counted = 1 - out.mask.reshape(4, -1).mean(1)
        torch.testing.assert_close(out.lam, counted)


def test_puzzlemix_transport_moves_blocks_only():
    # with a mask showing only x, transport re-arranges x's own blocks: the multiset of
    # blocks is unchanged
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    pm = mixupe.PuzzleMix(num_classes=2, transport=True, t_eps=0.0)
    plan = pm.plan(linear_net(16, 2), x, 2, device=x.device, dtype=torch.float64, lam=None,
                   perm=torch.tensor([1, 0]), generator=torch.Generator(),
                   targets=torch.eye(2, dtype=torch.float64), mask=torch.zeros(2, 2, 2,
                                                                                dtype=torch.float64))
    mixed = plan.mix(x)
    for b in range(2):
        got = sorted(MT.to_blocks(mixed, (2, 2))[b].reshape(4, -1).sum(1).tolist())
        want = sorted(MT.to_blocks(x, (2, 2))[b].reshape(4, -1).sum(1).tolist())
        assert np.allclose(got, want)


def test_puzzlemix_adversarial_noise_stays_within_eps():
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    net = linear_net(16)
    mask = torch.full((3, 2, 2), 0.5, dtype=torch.float64)
    clean = mixupe.PuzzleMix(num_classes=3, transport=False)
    noisy = mixupe.PuzzleMix(num_classes=3, transport=False, adv_p=1.0, adv_eps=0.05, seed=1)
    kw = {"device": x.device, "dtype": torch.float64, "lam": None, "perm": torch.tensor([1, 2, 0]),
          "targets": torch.eye(3, dtype=torch.float64), "mask": mask}
    a = clean.plan(net, x, 3, generator=torch.Generator(), **kw).mix(x)
    b = noisy.plan(net, x, 3, generator=noisy.generator, **kw).mix(x)
    diff = (b - a).abs()
    assert float(diff.max()) <= 0.05 + 1e-12 and float(diff.max()) > 0


def test_puzzlemix_refuses_grids_that_do_not_tile():
    with pytest.raises(mixupe.ConfigError, match="grid_sizes"):
        mixupe.PuzzleMix(num_classes=2, grid_sizes=(3,))(linear_net(16, 2).float(),
                                                         torch.randn(2, 1, 4, 4),
                                                         torch.tensor([0, 1]))
    with pytest.raises(mixupe.ConfigError, match="adv_p"):
        mixupe.PuzzleMix(adv_p=2.0)


def test_puzzlemix_works_on_1d_signals():
    x = torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(4))
    out = mixupe.PuzzleMix(num_classes=2, seed=0)(linear_net(32, 2).float(), x,
                                                  torch.tensor([0, 1, 0]))
    assert out.mask.shape == (3, 16)
    torch.testing.assert_close(out.lam, 1 - out.mask.mean(1))


# ---------------------------------------------------------------------- Co-Mixup
def test_comixup_each_output_is_optimal_given_the_others():
    """After the sweeps, no output can lower the objective by relabelling alone (two inputs,
    so each per-output step is exact), checked against every labeling of that output."""
    r = rng(6)
    m, grid = 2, (2, 2)
    cost = -r.uniform(size=(m, *grid))
    compat = np.eye(m)
    beta, gamma = 0.15, 0.1
    init = r.integers(0, m, size=(m, *grid))
    labels = MC.comixup_assignment(cost, compat, beta=beta, gamma=gamma, threshold=None,
                                   init=init, n_iter=10)
    best = MC.comixup_objective(labels, cost, compat, beta=beta, gamma=gamma)
    assert best <= MC.comixup_objective(init, cost, compat, beta=beta, gamma=gamma) + 1e-12
    for j in range(m):
        for z in all_labelings(grid, m):
            trial = labels.copy()
            trial[j] = z
            assert MC.comixup_objective(trial, cost, compat, beta=beta, gamma=gamma) >= best - 1e-9


def test_comixup_objective_matches_loops():
    labels = np.array([[[0, 1], [1, 1]], [[2, 2], [0, 1]]])
    cost = rng(7).normal(size=(3, 2, 2))
    compat = np.eye(3)
    want = sum(cost[labels[j][p], p[0], p[1]] for j in range(2) for p in np.ndindex(2, 2))
    want += 0.5 * (2 + 3)  # unequal neighbours: output 0 has 2, output 1 has 3
    counts = np.array([[(labels[j] == i).sum() for i in range(3)] for j in range(2)])
    want += 0.3 * 2 * counts[0] @ counts[1]
    got = MC.comixup_objective(labels, cost, compat, beta=0.5, gamma=0.3)
    assert math.isclose(got, want, rel_tol=1e-12)


def test_comixup_outputs_are_mosaics_with_counted_targets():
    x = torch.randn(5, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    y = torch.tensor([0, 1, 2, 0, 1])
    net = linear_net(128)
    cm = mixupe.CoMixup(num_classes=3, grid_sizes=(2, 4), partition=3, seed=0)
    out = cm(net, x, y)
    src = out.mask  # (B, H, W): input index per pixel
    mixed = torch.stack([x[src[j], :, torch.arange(8)[:, None], torch.arange(8)[None, :]]
                         .permute(2, 0, 1) for j in range(5)])
    torch.testing.assert_close(out.logits, net(mixed))
    onehot = torch.eye(3, dtype=torch.float64)[y]
    for j in range(5):
        share = torch.stack([(src[j] == i).double().mean() for i in range(5)])
        torch.testing.assert_close(out.targets[j], share @ onehot)
        # inputs only from this output's partition (groups of 3)
        assert {int(i) // 3 for i in src[j].unique()} == {j // 3}
    with pytest.raises(mixupe.ConfigError, match="assignment="):
        cm(net, x, y, lam=0.5)
