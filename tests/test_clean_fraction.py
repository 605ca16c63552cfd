"""MixupE's clean pass on a random part of the batch (``clean_fraction``).

The term becomes the mean over the subset, an unbiased estimate of the full batch's term:
checked exactly by enumerating every subset of a small batch, and statistically for the
subsets the objective draws. At 1.0 the step is the full-batch one, bit for bit.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

import mixupe
from mixupe.errors import ConfigError, InputError

K, B, ALPHA = 3, 6, 2.0
Y = torch.tensor([0, 1, 2, 1, 0, 2])
PERM = torch.tensor([3, 5, 0, 4, 1, 2])
LAM = 0.3
C = ALPHA / (2 * ALPHA + 1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mlp() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, K)).double()
    g = gen(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


X = torch.randn(B, 4, generator=gen(1), dtype=torch.float64)
XBAR = torch.randn(4, generator=gen(2), dtype=torch.float64) * 0.3


def objective(version: int, **options: object) -> mixupe.MixupE:
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K, seed=3), version=version,
                        eta=0.5, **options)
    obj.set_data_mean(XBAR)
    return obj


def grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


CONFIGS = [
    {"version": 1, "threshold": 0.0, "rescale": False},
    {"version": 1, "threshold": None, "rescale": True, "derivative": "jvp"},
    {"version": 2, "threshold": None, "rescale": False, "clean_pass": "fused"},
    {"version": 3, "threshold": 0.5, "rescale": False, "fast_sign": -1},
    {"version": 3, "threshold": 0.5, "rescale": True, "fast_sign": 1, "clean_pass": "fused"},
    {"version": 4, "threshold": None, "rescale": False, "fast_sign": 1},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_fraction_one_is_the_full_batch_step_bit_for_bit(config):
    """1.0 draws nothing more than Mixup and equals the explicit full subset exactly."""
    outs, nets = [], []
    for subset in (None, torch.arange(B)):
        net = mlp()
        obj = objective(clean_fraction=1.0, **config)
        out = obj(net, X, Y, clean_subset=subset)
        out.loss.backward()
        outs.append(out)
        nets.append(net)
        if subset is None:
            assert out.clean_subset is None
            plain = mixupe.Mixup(alpha=ALPHA, num_classes=K, seed=3)
            plain(mlp(), X, Y)
            assert torch.equal(obj.generator.get_state(), plain.generator.get_state())
    assert torch.equal(outs[0].loss, outs[1].loss)
    assert torch.equal(outs[0].scores, outs[1].scores)
    for a, b in zip(grads(nets[0]), grads(nets[1]), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("config", CONFIGS)
def test_subset_term_is_the_subset_mean_and_averages_exactly_to_the_full_term(config):
    """Every 2-subset of 6 samples: scores are the full batch's scores at those samples, the
    regulariser is sign eta c (sum over selected) / 2, and the average over all 15 subsets
    equals the full batch's regulariser (the samples do not interact in this model)."""
    rescale = config["rescale"]
    full = objective(clean_fraction=1.0, **config)(mlp(), X, Y, lam=LAM, perm=PERM)
    version, threshold = config["version"], config["threshold"]
    sign = 1.0 if version in (1, 2) else float(config.get("fast_sign", -1))
    full_scores = full.scores.detach()
    regs = []
    for subset in itertools.combinations(range(B), 2):
        index = torch.tensor(subset)
        obj = objective(clean_fraction=2 / B, **config)
        out = obj(mlp(), X, Y, lam=LAM, perm=PERM, clean_subset=index)
        torch.testing.assert_close(out.scores.detach(), full_scores[index], rtol=1e-12, atol=1e-14)
        s = full_scores[index]
        if version == 2:
            term = s.abs().sum()
        elif version == 4 or threshold is None:
            term = s.sum()
        else:
            term = s[s < threshold].sum()
        reg = sign * 0.5 * C * float(term) / 2
        assert out.stats["regulariser"] == pytest.approx(reg, rel=1e-12, abs=1e-15)
        total = out.stats["mixup_loss"] + reg
        expected = abs(out.stats["mixup_loss"]) / abs(total) * total if rescale else total
        assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-12)
        regs.append(reg)
    assert sum(regs) / len(regs) == pytest.approx(full.stats["regulariser"], rel=1e-12,
                                                  abs=1e-15)


@pytest.mark.parametrize("version", [1, 3])
def test_drawn_subsets_are_uniform_so_the_term_is_unbiased(version):
    """3000 steps with subsets drawn by the objective (fraction 1/3 of 6: 2 samples). The mean
    of the regulariser is within 4 standard errors of the full batch's term, the standard
    error computed exactly from the 15 equally likely subsets; every subset is drawn, each
    within 4.5 binomial standard deviations of 3000/15."""
    config = {"threshold": 0.5 if version == 3 else None, "rescale": False}
    full = objective(version, clean_fraction=1.0, **config)(mlp(), X, Y, lam=LAM, perm=PERM)
    obj = objective(version, clean_fraction=1 / 3, **config)
    net = mlp()
    n = 3000
    regs, counts = [], {}
    for _ in range(n):
        out = obj(net, X, Y, lam=LAM, perm=PERM)
        regs.append(out.stats["regulariser"])
        key = tuple(sorted(out.clean_subset.tolist()))
        counts[key] = counts.get(key, 0) + 1
    every = []
    for subset in itertools.combinations(range(B), 2):
        every.append(objective(version, **config)(net, X, Y, lam=LAM, perm=PERM,
                                                  clean_subset=torch.tensor(subset))
                     .stats["regulariser"])
    mean_all = sum(every) / len(every)
    assert mean_all == pytest.approx(full.stats["regulariser"], rel=1e-12, abs=1e-15)
    sd = math.sqrt(sum((r - mean_all) ** 2 for r in every) / len(every))
    assert sd > 0
    assert abs(sum(regs) / n - full.stats["regulariser"]) < 4 * sd / math.sqrt(n)
    assert len(counts) == 15
    p = 1 / 15
    assert all(abs(c - n * p) < 4.5 * math.sqrt(n * p * (1 - p)) for c in counts.values())


def test_lam_perm_and_subset_make_the_step_deterministic():
    a = objective(3, clean_fraction=0.5)(mlp(), X, Y)
    b = objective(3, clean_fraction=0.5)(mlp(), X, Y)
    assert torch.equal(a.clean_subset, b.clean_subset) and torch.equal(a.loss, b.loss)
    # lambda and the pairing are drawn first, as by Mixup alone, then the subset
    plain = mixupe.Mixup(alpha=ALPHA, num_classes=K, seed=3)(mlp(), X, Y)
    assert torch.equal(a.lam, plain.lam.to(a.lam.dtype)) and torch.equal(a.perm, plain.perm)
    # an explicit subset with lam and perm does not depend on the generator at all
    index = torch.tensor([4, 1, 2])
    runs = []
    for seed in (0, 1):
        obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K, seed=seed),
                            version=3, eta=0.5, clean_fraction=0.5)
        runs.append(obj(mlp(), X, Y, lam=LAM, perm=PERM, clean_subset=index))
    assert torch.equal(runs[0].loss, runs[1].loss)
    assert torch.equal(runs[0].clean_subset, index)
    assert runs[0].clean_logits.shape == (3, K)


@pytest.mark.parametrize("clean_pass", ["separate", "fused"])
def test_the_clean_pass_only_sees_the_subset(clean_pass):
    calls: list[int] = []
    net = mlp()
    net.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[0]))
    out = objective(3, clean_fraction=0.25, clean_pass=clean_pass)(net, X.repeat(4, 1),
                                                                 Y.repeat(4))
    assert mixupe.MixupE(num_classes=K, clean_fraction=0.25).clean_size(24) == 6
    assert out.clean_subset.shape == (6,) and out.scores.shape == (6,)
    assert calls == ([24, 6] if clean_pass == "separate" else [30])


def test_manifold_and_dict_batches_take_the_subset_too():
    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = mlp()[:2], mlp()[2:]

        def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
            return self.head(self.body(batch["x"]) * batch["w"])

    x = {"x": X, "w": torch.rand(B, 1, generator=gen(5), dtype=torch.float64)}
    index = torch.tensor([5, 0])
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["body"], num_classes=K),
                        version=1, eta=0.5, clean_fraction=0.3)
    net = DictNet()
    out = obj(net, x, Y, lam=LAM, perm=PERM, clean_subset=index)
    # the representation mean is the subset's (an unbiased estimate of the batch mean)
    with torch.no_grad():
        h = net.body(X[index])
    torch.testing.assert_close(obj.layer_means["body"], h.mean(0))
    assert out.scores.shape == (2,)


def test_bad_fractions_and_subsets_are_refused():
    for bad in (0.0, -0.5, 1.5, float("nan"), True, "0.5"):
        with pytest.raises(ConfigError, match=r"clean_fraction=.* is invalid.*\(0, 1\]"):
            mixupe.MixupE(num_classes=K, clean_fraction=bad)
    obj = objective(3, clean_fraction=0.5)
    for bad, pattern in ((torch.tensor([0.0, 1.0]), r"clean_subset of shape \(2,\) is invalid"),
                         (torch.arange(7), r"clean_subset of shape \(7,\) is invalid"),
                         (torch.tensor([], dtype=torch.int64), r"of shape \(0,\) is invalid"),
                         (torch.tensor([0, 6]), r"clean_subset holds index 6, outside \[0, 5\]"),
                         (torch.tensor([1, 1]), r"clean_subset holds an index twice")):
        with pytest.raises(InputError, match=pattern):
            obj(mlp(), X, Y, clean_subset=bad)


def test_train_mode_batchnorm_runs_on_the_subset_statistics():
    """With train-mode BatchNorm the clean pass normalises with the subset's statistics: the
    scores equal those of the same model run on the subset alone."""
    net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, K)).double()
    index = torch.tensor([1, 3, 4])
    out = objective(4, clean_fraction=0.5)(copy.deepcopy(net), X, Y, clean_subset=index)
    f = net(X[index])
    onehot = torch.eye(K, dtype=torch.float64)[Y[index]]
    expected = ((onehot - f.softmax(1)) * f).sum(1)
    torch.testing.assert_close(out.scores.detach(), expected.detach())


def test_dict_batch_list_entries_are_subset_too():
    # Issue 23.5: a list of B strings used to pass whole beside the subset's tensors.
    from mixupe.objectives.base import select_samples

    seen = []

    class TaggedNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = mlp()[:2], mlp()[2:]

        def forward(self, batch):
            assert len(batch["tag"]) == batch["x"].shape[0]
            seen.append(list(batch["tag"]))
            return self.head(self.body(batch["x"]))

    tags = [f"s{i}" for i in range(B)]
    x = {"x": X, "tag": tags, "note": "not per sample"}
    index = torch.tensor([5, 0])
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["body"], num_classes=K),
                        version=1, eta=0.5, clean_fraction=0.3)
    obj(TaggedNet(), x, Y, lam=LAM, perm=PERM, clean_subset=index)
    assert ["s5", "s0"] in seen and tags in seen  # the clean pass saw the subset's tags
    sub = select_samples(x, index, batch_size=B)
    assert sub["tag"] == ["s5", "s0"] and sub["note"] == "not per sample"
    assert torch.equal(sub["x"], X[[5, 0]])
    with pytest.raises(mixupe.errors.InputError, match=r"entry 'tag' of the batch has 3 items.*"
                       r"one item per sample"):
        select_samples({"x": X, "tag": ["a", "b", "c"]}, index, batch_size=B)
