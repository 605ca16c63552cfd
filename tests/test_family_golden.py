"""Puzzle Mix and Co-Mixup against the authors' own outputs (tests/golden/README.md): the same
inputs and draws must give the same masks, assignments and targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mixupe
from mixupe.functional import cuts as MC
from mixupe.functional import transport as MT
from mixupe.functional.masks import layout_of
from mixupe.objectives.co_mixup import peak_distance
from mixupe.objectives.saliency_guided import _block_mean, _normalised

pytest.importorskip("maxflow")
pytest.importorskip("ot")
scipy_opt = pytest.importorskip("scipy.optimize")

GOLDEN = Path(__file__).parent / "golden"
PUZZLE = torch.load(GOLDEN / "puzzlemix_e2dbf3a.pt")
COMIX = torch.load(GOLDEN / "comixup_2a76816.pt")


def _puzzle(case: dict, solver: str) -> mixupe.PuzzleMix:
    return mixupe.PuzzleMix(mean=PUZZLE["mean"].tolist(), std=PUZZLE["std"].tolist(),
                            solver=solver,
                            t_size=None if case["t_size"] == -1 else case["t_size"])


def _needs(solver: str) -> None:
    if solver == "gco":
        pytest.importorskip("gco", reason="solver='gco' needs `pip install gco-wrapper`")


@pytest.mark.parametrize("k", range(len(PUZZLE["cases"])))
def test_puzzlemix_masks_equal_the_release(k):
    """Normalised saliency, neigh_size 4 pooling, seams on [0, 1] pixels, the clamp on the
    total edge weight, GCO's swap: the masks (and so lam) equal the release's, per sample."""
    _needs("gco")
    case = PUZZLE["cases"][k]
    grid = (case["grid"],) * 2
    saliency = _normalised(_block_mean(PUZZLE["saliency"], grid))
    weight_partner = _puzzle(case, "gco").sample_mask(
        saliency, torch.tensor(case["lam"]), case["perm"], PUZZLE["x"], grid)
    assert torch.equal((1 - weight_partner).double(), case["mask"].double())
    torch.testing.assert_close((1 - weight_partner).flatten(1).mean(1).float(), case["ratio"])


@pytest.mark.parametrize("k", range(len(PUZZLE["cases"])))
def test_puzzlemix_maxflow_masks_are_no_worse_than_the_release(k):
    """The PyMaxflow swap on the same energy: where its mask differs from the release's, its
    energy is no higher (it is not held back by GCO's integer rounding)."""
    case = PUZZLE["cases"][k]
    grid = (case["grid"],) * 2
    pm = _puzzle(case, "maxflow")
    saliency = _normalised(_block_mean(PUZZLE["saliency"], grid))
    lam, perm, pix = torch.tensor(case["lam"]), case["perm"], pm.pixels(PUZZLE["x"])
    unary, weights, pairwise = MC.puzzle_energies(saliency, saliency[perm], lam, x_self=pix,
                                                  x_partner=pix[perm])
    ours = pm.sample_mask(saliency, lam, perm, PUZZLE["x"], grid)
    for b in range(len(perm)):
        energy = [MC.grid_energy(np.rint(2 * z).astype(np.int64), unary[b].numpy(),
                                 [w[b].numpy() for w in weights], pairwise.numpy())
                  for z in (ours[b].numpy(), 1 - case["mask"][b].double().numpy())]
        assert energy[0] <= energy[1] + 1e-12, b


@pytest.mark.parametrize("k", range(len(PUZZLE["cases"])))
def test_puzzlemix_transport_solves_the_release_cost_exactly(k):
    """The transport sees the release's per-sample normalised saliency at the release's
    transport grid, and its plan is the exact optimum of the release's cost (the release's
    own plan is an approximation of it: a documented deviation)."""
    case = PUZZLE["cases"][k]
    grid = (case["grid"],) * 2
    x = PUZZLE["x"]
    pm = _puzzle(case, "maxflow")
    sources, t_grid = pm._sources(PUZZLE["saliency"], 1 - case["mask"].double(), case["perm"],
                                  layout_of(x, method="PuzzleMix"), grid)
    assert t_grid == tuple(case["t_saliency"].shape[2:])
    cost_pos = 0.8 * MT.block_cost_matrix(t_grid)
    for side in range(2):
        sal = case["t_saliency"][side].reshape(len(x), -1).double().numpy()
        region = case["t_region"][side].reshape(len(x), -1).double().numpy()
        for b in range(len(x)):
            cost = cost_pos - sal[b][:, None] * region[b]
            rows, cols = scipy_opt.linear_sum_assignment(cost)
            src = sources[side][b].numpy()
            assert sorted(src.tolist()) == list(range(len(src)))  # a permutation
            got = cost[src, np.arange(len(src))].sum()
            assert abs(got - cost[rows, cols].sum()) < 1e-12, (side, b)


def _partitions(case: dict):
    n = case["grid"]
    saliency = _block_mean(case["saliency"], (n, n))
    dist = peak_distance(case["saliency"])
    b = saliency.shape[0]
    for k, lo in enumerate(range(0, b, 20)):
        hi = min(b, lo + 20)
        yield (saliency[lo:hi], dist[lo:hi, lo:hi], case["prior"][lo:hi],
               case["init"][lo:hi].long(), case["onehot"][k].double())


@pytest.mark.parametrize("k", range(len(COMIX["cases"])))
def test_comixup_peak_distance_equals_the_release(k):
    case = COMIX["cases"][k]
    assert torch.equal(peak_distance(case["saliency"]), case["a_dist"])


@pytest.mark.parametrize("k", range(len(COMIX["cases"])))
def test_comixup_assignment_equals_the_release(k):
    """GCO's alpha-beta swap, soft blocks from the second sweep, identical outputs resolved,
    the release's stopping rule: every block of every output equals the release's."""
    _needs("gco")
    cm = mixupe.CoMixup()
    for saliency, dist, prior, init, want in _partitions(COMIX["cases"][k]):
        assert torch.equal(cm.solve_partition(saliency, dist, prior, init), want)


@pytest.mark.parametrize("k", range(len(COMIX["cases"])))
def test_comixup_targets_equal_the_release(k):
    """Mixed targets from the release's block weights (soft blocks count 1/2)."""
    case = COMIX["cases"][k]
    b = case["labels"].shape[0]
    z = torch.zeros((b, case["grid"], case["grid"], min(b, 20)), dtype=torch.float64)
    for j, (*_, want) in enumerate(_partitions(case)):
        z[20 * j : 20 * j + want.shape[0], ..., : want.shape[0]] = want
    cm = mixupe.CoMixup(num_classes=10)
    plan = cm._mosaic(z, layout_of(torch.zeros(b, 3, 16, 16), method="CoMixup"), b,
                      torch.float32)
    onehot = torch.eye(10)[case["labels"]]
    torch.testing.assert_close(plan.weights @ onehot, case["targets"])


def test_comixup_maxflow_solver_is_a_valid_alternative():
    """PyMaxflow's alpha-expansion reaches other local optima: weights are still mosaics of
    whole and half blocks, one per block summing to 1."""
    cm = mixupe.CoMixup(solver="maxflow")
    saliency, dist, prior, init, _ = next(_partitions(COMIX["cases"][1]))
    z = cm.solve_partition(saliency, dist, prior, init)
    torch.testing.assert_close(z.sum(-1), torch.ones(z.shape[:-1], dtype=torch.float64))
    assert set(z.unique().tolist()) <= {0.0, 0.5, 1.0}


def test_released_defaults():
    cm, pm = mixupe.CoMixup(), mixupe.PuzzleMix()
    assert cm.grid_sizes == (4,) and cm.resolve and cm.soft_blocks and cm.saliency_train
    assert cm.solver == "gco" and pm.solver == "gco"
    assert pm.neigh_size == 4 and pm.t_size is None and pm.grid_sizes == (2, 4, 8, 16)


class _ModeRecorder(torch.nn.Module):
    """A linear model that records the train flag of every forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.net(x)


@pytest.mark.parametrize("saliency_train", [True, False])
@pytest.mark.parametrize("start_in_train", [True, False])
def test_comixup_saliency_pass_runs_in_the_mode_asked_and_restores_the_model(
        saliency_train, start_in_train):
    """The release takes Co-Mixup's saliency in train mode (``clean_lam > 0``); the saliency
    pass is the first forward of the step, and the model's own mode comes back after it."""
    model = _ModeRecorder().train(start_in_train)
    cm = mixupe.CoMixup(num_classes=3, grid_sizes=(2,), seed=0, solver="maxflow",
                        saliency_train=saliency_train)
    cm(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))
    assert model.modes[0] is saliency_train
    assert model.training is start_in_train
    assert all(m is start_in_train for m in model.modes[1:])
