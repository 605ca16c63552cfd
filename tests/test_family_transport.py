"""Sinkhorn against POT, AlignMix's alignment and mixing against a reference built with POT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import mixupe
from mixupe.functional import transport as MT

ot = pytest.importorskip("ot")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("log_domain", [True, False])
def test_sinkhorn_marginals_and_plan_match_pot(log_domain):
    cost = torch.rand(3, 5, 4, generator=gen(0), dtype=torch.float64)
    plan = MT.sinkhorn(cost, eps=0.2, n_iter=500, log_domain=log_domain)
    torch.testing.assert_close(plan.sum(2), torch.full((3, 5), 1 / 5, dtype=torch.float64))
    torch.testing.assert_close(plan.sum(1), torch.full((3, 4), 1 / 4, dtype=torch.float64))
    for b in range(3):
        ref = ot.sinkhorn(np.full(5, 1 / 5), np.full(4, 1 / 4), cost[b].numpy(), reg=0.2,
                          numItermax=5000, stopThr=1e-13)
        np.testing.assert_allclose(plan[b].numpy(), ref, atol=1e-9)


def test_sinkhorn_rejects_bad_options():
    with pytest.raises(mixupe.ConfigError, match="eps"):
        MT.sinkhorn(torch.zeros(1, 2, 2), eps=0.0)
    with pytest.raises(mixupe.ConfigError, match="n_iter"):
        MT.sinkhorn(torch.zeros(1, 2, 2), n_iter=0)


def test_alignment_undoes_a_spatial_shuffle():
    h = torch.randn(2, 6, 3, 3, generator=gen(1), dtype=torch.float64)
    order = torch.randperm(9, generator=gen(2))
    shuffled = h.reshape(2, 6, 9)[:, :, order].reshape(2, 6, 3, 3)
    aligned = MT.align_features(h, shuffled, eps=0.002, n_iter=2000, scale_cost=True)
    torch.testing.assert_close(aligned, h, atol=1e-4, rtol=0)


def test_alignmix_mixes_the_pot_aligned_partner():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(3 * 8, 4)).double()
    x = torch.randn(4, 2, 8, generator=gen(3), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([1, 2, 3, 0])
    out = mixupe.AlignMix(layers=["1"], eps=0.1, n_iter=300, num_classes=4, scale_cost=True)(
        net, x, y, lam=0.4, perm=perm, layer="1", side="partner")
    h = net[1](net[0](x)).detach()
    mixed = torch.empty_like(h)
    for b in range(4):
        a, p = h[b].T.numpy(), h[perm[b]].T.numpy()  # (positions, channels)
        cost = ((a[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        cost = cost / cost.max()
        plan = ot.sinkhorn(np.full(8, 1 / 8), np.full(8, 1 / 8), cost, reg=0.1,
                           numItermax=5000, stopThr=1e-13)
        mixed[b] = 0.4 * h[b] + 0.6 * torch.from_numpy(8 * plan @ p).T
    logits = net[3](net[2](mixed))
    ce = lambda t: torch.logsumexp(logits, 1) - logits.gather(1, t[:, None])[:, 0]  # noqa: E731
    torch.testing.assert_close(out.logits, logits, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(out.loss, (0.4 * ce(y) + 0.6 * ce(y[perm])).mean(), atol=1e-7,
                               rtol=1e-6)


def test_alignmix_refuses_vector_layers():
    net = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(mixupe.InputError, match="convolutional layer"):
        mixupe.AlignMix(layers=["1"], num_classes=2)(net, torch.randn(3, 4),
                                                     torch.tensor([0, 1, 0]))
