"""ERM, Mixup and CutMix objectives against plain per-sample loops and the theory's identity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixupe
from mixupe import functional as MF
from mixupe.errors import NonFiniteLossError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def seeded(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model


def mlp(d: int = 5, k: int = 3) -> nn.Module:
    return seeded(nn.Sequential(nn.Linear(d, 7), nn.Tanh(), nn.Linear(7, k)).double())


def ce(logit_row: torch.Tensor, label: int) -> float:
    """Cross-entropy of one row by the formula logsumexp(f) - f_y."""
    vals = logit_row.tolist()
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals)) - vals[label]


def test_erm_equals_torch_cross_entropy_with_smoothing():
    net = mlp()
    x, y = randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for eps in (0.0, 0.2):
        out = mixupe.ERM(num_classes=3, label_smoothing=eps)(net, x, y)
        ref = F.cross_entropy(net(x), y, label_smoothing=eps)
        torch.testing.assert_close(out.loss, ref)
        assert torch.equal(out.perm, torch.arange(6)) and float(out.lam) == 1.0


@pytest.mark.parametrize("per_sample", [False, True])
def test_mixup_loss_equals_per_sample_loop(per_sample):
    net = mlp()
    x, y = randn(7, 5, seed=1), torch.tensor([0, 1, 2, 2, 1, 0, 1])
    perm = torch.tensor([3, 0, 6, 1, 2, 5, 4])
    lam = torch.linspace(0.1, 0.9, 7, dtype=torch.float64) if per_sample else 0.3
    out = mixupe.Mixup(alpha=1.0, per_sample=per_sample, num_classes=3)(net, x, y, lam=lam,
                                                                        perm=perm)
    total = 0.0
    for i in range(7):
        li = float(lam[i]) if per_sample else lam
        xi = li * x[i] + (1 - li) * x[int(perm[i])]
        fi = net(xi.unsqueeze(0))[0].detach()
        total += li * ce(fi, int(y[i])) + (1 - li) * ce(fi, int(y[int(perm[i])]))
    assert abs(float(out.loss.detach()) - total / 7) < 1e-12
    assert out.logits.shape == (7, 3)


def test_mixup_soft_targets_and_label_smoothing():
    net = mlp()
    x, y = randn(5, 5), torch.tensor([0, 1, 2, 0, 1])
    out = mixupe.Mixup(alpha=1.0, num_classes=3, label_smoothing=0.1, seed=3)(net, x, y)
    t = out.targets
    torch.testing.assert_close(t.sum(1), torch.ones(5, dtype=t.dtype))
    assert int((t > 0.1 / 3 + 1e-9).sum(1).max()) <= 2
    assert float(t.min()) >= 0.1 / 3 - 1e-12
    # soft-target labels go through the same path
    soft = torch.softmax(randn(5, 3, seed=2), 1)
    out2 = mixupe.Mixup(alpha=1.0)(net, x, soft, lam=0.4, perm=torch.tensor([1, 0, 3, 4, 2]))
    ref = 0.4 * soft + 0.6 * soft[torch.tensor([1, 0, 3, 4, 2])]
    torch.testing.assert_close(out2.targets, ref)


def _cnn1d() -> nn.Module:
    return seeded(nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                nn.Linear(3 * 11, 3)).double())


def _cnn2d() -> nn.Module:
    return seeded(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                nn.Linear(2 * 4 * 9, 3)).double())


@pytest.mark.parametrize(("shape", "factory"), [((6, 2, 11), _cnn1d), ((6, 1, 4, 9), _cnn2d)])
@pytest.mark.parametrize("per_sample", [False, True])
def test_cutmix_loss_equals_loop_and_lambda_is_kept_fraction(shape, factory, per_sample):
    net = factory()
    x, y = randn(*shape, seed=2), torch.tensor([0, 1, 2, 0, 1, 2])
    perm = torch.tensor([5, 3, 0, 1, 2, 4])
    cut = mixupe.CutMix(alpha=1.0, per_sample=per_sample, num_classes=3, seed=7)
    out = cut(net, x, y, perm=perm)
    spatial = shape[2:]
    area = math.prod(spatial)
    total = 0.0
    for i in range(6):
        m = out.mask[i if per_sample else 0]
        xi = x[i].clone()
        pasted = 0
        for pos in torch.cartesian_prod(*[torch.arange(s) for s in spatial]).reshape(
            -1, len(spatial)
        ).tolist():
            if bool(m[tuple(pos)]):
                xi[(slice(None), *pos)] = x[int(perm[i])][(slice(None), *pos)]
                pasted += 1
        kept = 1 - pasted / area
        li = float(out.lam[i]) if per_sample else float(out.lam)
        assert abs(li - kept) < 1e-12
        fi = net(xi.unsqueeze(0))[0].detach()
        total += kept * ce(fi, int(y[i])) + (1 - kept) * ce(fi, int(y[int(perm[i])]))
    assert abs(float(out.loss.detach()) - total / 6) < 1e-12


def test_cutmix_given_lambda_without_correction_is_kept():
    net = _cnn2d()
    x, y = randn(4, 1, 4, 9), torch.tensor([0, 1, 2, 0])
    out = mixupe.CutMix(alpha=1.0, correct_lambda=False, num_classes=3)(net, x, y, lam=0.6)
    assert float(out.lam) == pytest.approx(0.6)


class Recorder(nn.Module):
    """Returns fixed logits and keeps the batch it was called with."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x)
        return torch.zeros(x.shape[0], self.k, dtype=torch.float64)


@pytest.mark.parametrize(("shape", "axes", "cut_axes"), [
    ((5, 9, 4), (1,), (1,)),          # batch-first sequence (B, L, D): cut time steps
    ((5, 9, 4), None, (2,)),          # default for rank 3: the last axis (B, C, L)
    ((5, 9, 4), (-2,), (1,)),         # negative axes count from the end
    ((5, 2, 6, 7), (3,), (3,)),       # spectrogram (B, 1, F, T): time only
    ((5, 2, 6, 7), None, (2, 3)),     # default for rank 4: H and W
    ((5, 6, 3, 7), (1, 3), (1, 3)),   # any two axes
])
def test_cutmix_axes_paste_whole_slices_along_the_chosen_axes(shape, axes, cut_axes):
    x = randn(*shape, seed=3)
    perm = torch.tensor([2, 0, 4, 1, 3])
    net = Recorder()
    out = mixupe.CutMix(alpha=1.0, axes=axes, num_classes=3, seed=5, per_sample=True)(
        net, x, torch.arange(5) % 3, perm=perm)
    mixed = net.seen[0]
    for i in range(5):
        # an index along the cut axes is pasted iff every element there comes from x[perm[i]]
        pasted = (mixed[i] == x[int(perm[i])]) & (mixed[i] != x[i])
        kept = mixed[i] == x[i]
        assert bool((pasted | kept).all())
        other = [a - 1 for a in range(1, len(shape)) if a not in cut_axes]
        along = pasted.all(dim=other) if other else pasted
        across = pasted.any(dim=other) if other else pasted
        assert torch.equal(along, across)  # whole slices across the uncut axes
        assert tuple(along.shape) == tuple(shape[a] for a in cut_axes)
        kept_fraction = 1 - float(along.double().mean())
        assert abs(float(out.lam[i]) - kept_fraction) < 1e-12


def test_cutmix_on_tabular_batches_uses_a_1d_box():
    net = mlp(d=8)
    out = mixupe.CutMix(alpha=1.0, num_classes=3, seed=1)(net, randn(5, 8), torch.arange(5) % 3)
    assert out.mask.shape == (1, 8)
    assert abs(float(out.lam) - (1 - float(out.mask.double().mean()))) < 1e-12


@pytest.mark.parametrize("objective", [
    lambda: mixupe.ERM(num_classes=3),
    lambda: mixupe.Mixup(alpha=1.0, num_classes=3),
    lambda: mixupe.Mixup(alpha=1.0, num_classes=3, per_sample=True),
    lambda: mixupe.CutMix(alpha=1.0, num_classes=3, spatial_dims=1),
])
def test_batch_of_one_equals_erm_and_odd_batches_work(objective):
    net = mlp()
    x, y = randn(1, 5), torch.tensor([2])
    out = objective()(net, x, y)
    assert abs(float(out.loss.detach()) - ce(net(x)[0].detach(), 2)) < 1e-12
    out = objective()(net, randn(7, 5), torch.arange(7) % 3)
    assert torch.isfinite(out.loss)


def test_same_seed_same_step_different_seed_different_pairing():
    net = mlp()
    x, y = randn(32, 5), torch.arange(32) % 3
    a = mixupe.Mixup(alpha=1.0, num_classes=3, seed=11)(net, x, y)
    b = mixupe.Mixup(alpha=1.0, num_classes=3, seed=11)(net, x, y)
    c = mixupe.Mixup(alpha=1.0, num_classes=3, seed=12)(net, x, y)
    assert torch.equal(a.perm, b.perm) and torch.equal(a.lam, b.lam) and torch.equal(a.loss, b.loss)
    assert not torch.equal(a.perm, c.perm)
    # an explicit generator at call time overrides the objective's own
    d = mixupe.Mixup(alpha=1.0, num_classes=3, seed=99)(net, x, y, generator=gen(11))
    assert torch.equal(a.perm, d.perm)


def test_no_global_rng_is_touched():
    net = mlp()
    nets = [_cnn2d(), mlp()]
    before = torch.random.get_rng_state().clone()
    x, y = randn(6, 5), torch.arange(6) % 3
    mixupe.Mixup(alpha=1.0, num_classes=3)(net, x, y)
    mixupe.CutMix(alpha=1.0, num_classes=3)(nets[0], randn(6, 1, 4, 9), y)
    mixupe.ManifoldMixup(alpha=1.0, layers=["input", "1"], num_classes=3)(nets[1], x, y)
    mixupe.MixupE(version=3, num_classes=3)(net, x, y)
    assert torch.equal(before, torch.random.get_rng_state())


def test_stats_are_lazy_and_tensors_are_exposed():
    out = mixupe.Mixup(alpha=1.0, num_classes=3)(mlp(), randn(4, 5), torch.arange(4) % 3)
    assert out._stats is None
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad
               for v in out.stat_tensors.values())
    assert out.stats["loss"] == pytest.approx(float(out.loss.detach()))
    assert out._stats is not None


def test_validation_can_be_switched_off():
    net = mlp()
    x, y = randn(4, 5), torch.tensor([0, 1, 2, 7])  # label 7 out of range
    out = mixupe.ERM(num_classes=3, validate=False, check_finite=False)(net, x, y)  # no check
    # the out-of-range row is NaN, so the loss is NaN (not a silent 0) and a finite check fires
    assert out.targets[3].isnan().all() and not out.targets[:3].isnan().any()
    assert out.loss.isnan()
    with pytest.raises(NonFiniteLossError, match=r"loss is nan.*labels' range"):
        mixupe.ERM(num_classes=3, validate=False)(net, x, y)
    for label in (-1, 3):  # the loss of each out-of-range label alone is NaN, not 0
        single = mixupe.Mixup(alpha=1.0, num_classes=3, validate=False, check_finite=False)
        assert single(net, x[:1], torch.tensor([label])).loss.isnan()
    bad = torch.full((4, 5), float("nan"), dtype=torch.float64)
    out = mixupe.Mixup(alpha=1.0, num_classes=3, validate=False, check_finite=False)(
        net, bad, torch.tensor([0, 1, 2, 0])
    )
    assert not bool(torch.isfinite(out.loss))


@pytest.mark.parametrize("alpha", [1.0, 2.0])
def test_mixup_expectation_equals_one_sided_beta_form(alpha):
    """E_{lam~Beta(a,a)} over all pairs of the Mixup loss equals the one-sided form with
    lam' ~ Beta(a+1, a), integrated numerically over lambda."""
    from scipy import integrate, stats

    net = mlp(d=3)
    n = 4
    x, y = randn(n, 3, seed=5), torch.tensor([0, 1, 2, 1])
    mix = mixupe.Mixup(alpha=alpha, num_classes=3)
    shifts = [torch.tensor([(i + k) % n for i in range(n)]) for k in range(n)]  # every pair once

    def library_mixup(lam: float) -> float:
        with torch.no_grad():
            return sum(float(mix(net, x, y, lam=lam, perm=p).loss) for p in shifts) / n

    def one_sided(lam: float) -> float:
        total = 0.0
        with torch.no_grad():
            for i in range(n):
                for j in range(n):
                    f = net((lam * x[i] + (1 - lam) * x[j]).unsqueeze(0))[0]
                    total += ce(f, int(y[i]))
        return total / (n * n)

    lhs = integrate.quad(lambda t: stats.beta.pdf(t, alpha, alpha) * library_mixup(t), 0, 1,
                         epsabs=1e-11)[0]
    rhs = integrate.quad(lambda t: stats.beta.pdf(t, alpha + 1, alpha) * one_sided(t), 0, 1,
                         epsabs=1e-11)[0]
    assert abs(lhs - rhs) < 1e-8
    # and the identity is not trivially satisfied by the same density
    wrong = integrate.quad(lambda t: stats.beta.pdf(t, alpha, alpha) * one_sided(t), 0, 1)[0]
    assert abs(wrong - rhs) > 1e-4


def test_objectives_take_keyword_arguments_only():
    with pytest.raises(TypeError):
        mixupe.Mixup(1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        mixupe.MixupE(2.0)  # type: ignore[misc]


def test_functional_lambda_of_objective_matches_generator_stream():
    # The objective's draw equals drawing lambda then the permutation from the same stream.
    g = gen(21)
    lam = MF.sample_lambda(1.0, generator=g, dtype=torch.float64)
    perm = MF.sample_permutation(6, generator=g)
    out = mixupe.Mixup(alpha=1.0, num_classes=3, seed=21)(mlp(), randn(6, 5), torch.arange(6) % 3)
    assert torch.equal(out.perm, perm) and float(out.lam) == pytest.approx(float(lam))
