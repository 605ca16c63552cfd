"""Manifold MixupE versions 1/2 under DDP: two gloo processes against one process by hand.

Each rank mixes its own batch (4 and 6 samples) at a hidden layer; the direction of the
version-1/2 score points to the running mean of the representation, which must be the mean
over both ranks' batches (all-reduced, as the data mean is). The reference computes, in this
process and without the library, each rank's loss with the global mean from METHOD.md's
formulas (per-sample Jacobians) and averages the gradients as DDP does. Without the
all-reduce (``sync_layer_means=False``) the gradients differ, so the test can fail.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import mixupe

WORLD, K, ALPHA, ETA, DECAY = 2, 3, 2.0, 0.5, 0.9
SIZES = (4, 6)  # samples per rank: the global mean weighs each sample, not each rank


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, K))
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.7)
        self.double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def steps() -> list[list[tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]]]:
    """Two steps; per step and rank: inputs, labels, lambda, pairing."""
    g = torch.Generator().manual_seed(1)
    out = []
    for lam in (0.3, 0.8):
        per_rank = []
        for b in SIZES:
            x = torch.randn(b, 4, generator=g, dtype=torch.float64) + 0.5
            y = torch.randint(0, K, (b,), generator=g)
            per_rank.append((x, y, lam, torch.randperm(b, generator=g)))
        out.append(per_rank)
    return out


class Step(nn.Module):
    """The objective inside one DDP forward (as the training engine runs it)."""

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        object.__setattr__(self, "objective", objective)

    def forward(self, x: torch.Tensor, y: torch.Tensor, lam: float,
                perm: torch.Tensor) -> torch.Tensor:
        return self.objective(self.model, x, y, lam=lam, perm=perm).loss


def _worker(rank: int, port: int, root: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD)
    try:
        results: dict[str, Any] = {}
        for version in (1, 2):
            for sync in (None, False):
                objective = mixupe.MixupE(
                    mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["body"], num_classes=K),
                    version=version, eta=ETA, threshold=None, mean_decay=DECAY,
                    sync_layer_means=sync)
                ddp = DistributedDataParallel(Step(Chain(), objective))
                grads = []
                for per_rank in steps():
                    x, y, lam, perm = per_rank[rank]
                    ddp.zero_grad()
                    ddp(x, y, lam, perm).backward()
                    grads.append([p.grad.clone() for p in ddp.module.model.parameters()])
                results[f"v{version}-{sync}"] = {"grads": grads,
                                                 "mean": objective.layer_means["body"]}
        torch.save(results, f"{root}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ddp_mixupe")
    mp.start_processes(_worker, args=(_free_port(), str(root)), nprocs=WORLD, join=True,
                       start_method="spawn")
    return [torch.load(Path(root) / f"rank{r}.pt") for r in range(WORLD)]


def ce(row: torch.Tensor, label: int) -> torch.Tensor:
    return torch.logsumexp(row, 0) - row[label]


def rank_loss(net: Chain, x: torch.Tensor, y: torch.Tensor, lam: float, perm: torch.Tensor,
              hbar: torch.Tensor, version: int) -> torch.Tensor:
    """METHOD.md for one rank's batch, mixing at ``body``, direction ``hbar - h_i``."""
    b = x.shape[0]
    h = net.body(x)
    f_mix = net.head(lam * h + (1 - lam) * h[perm])
    l_mix = sum(lam * ce(f_mix[i], int(y[i])) + (1 - lam) * ce(f_mix[i], int(y[int(perm[i])]))
                for i in range(b)) / b
    onehot = torch.eye(K, dtype=torch.float64)[y]
    scores = []
    for i in range(b):
        hi = h[i : i + 1]
        r = (torch.softmax(net.head(hi)[0], 0) - onehot[i]).detach()
        jac = torch.autograd.functional.jacobian(lambda z: net.head(z)[0], hi,
                                                 create_graph=True)[:, 0, :]
        scores.append(r @ (jac @ (hbar - h[i].detach())))
    term = sum(s.abs() for s in scores) if version == 2 else sum(scores)
    loss = l_mix + ETA * (ALPHA / (2 * ALPHA + 1)) * term / b
    return abs(float(l_mix.detach())) / abs(float(loss.detach())) * loss


@pytest.mark.parametrize("version", [1, 2])
def test_ddp_gradient_equals_one_process_with_the_global_representation_mean(ranks, version):
    net = Chain()
    hbar = None
    for step, per_rank in enumerate(steps()):
        with torch.no_grad():
            h_all = torch.cat([net.body(x) for x, *_ in per_rank])
        hbar = h_all.mean(0) if hbar is None else DECAY * hbar + (1 - DECAY) * h_all.mean(0)
        reference = None
        for x, y, lam, perm in per_rank:
            net.zero_grad()
            rank_loss(net, x, y, lam, perm, hbar, version).backward()
            part = [p.grad.clone() / WORLD for p in net.parameters()]
            reference = part if reference is None else [a + c for a, c in zip(reference, part,
                                                                               strict=True)]
        for rank in range(WORLD):
            got = ranks[rank][f"v{version}-None"]["grads"][step]
            for a, b in zip(got, reference, strict=True):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
            local = ranks[rank][f"v{version}-False"]["grads"][step]
            assert not all(torch.allclose(a, b, rtol=1e-6, atol=1e-9)
                           for a, b in zip(local, reference, strict=True))
    for rank in range(WORLD):
        torch.testing.assert_close(ranks[rank][f"v{version}-None"]["mean"], hbar)


def test_sync_layer_means_without_a_process_group_is_refused():
    objective = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["body"],
                                                          num_classes=K),
                              version=1, sync_layer_means=True)
    with pytest.raises(mixupe.ConfigError, match=r"sync_layer_means=True but no "
                                                 r"torch.distributed process group"):
        objective(Chain(), torch.randn(4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(mixupe.ConfigError, match=r"sync_layer_means='yes' is invalid"):
        mixupe.MixupE(num_classes=K, sync_layer_means="yes")  # type: ignore[arg-type]
