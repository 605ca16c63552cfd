"""Collate-time mixing: the mixed batch by hand, loss on mixed targets == mixed losses for every
loss linear in the target, the non-linear cases' closed forms, and DataLoader workers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import mixupe
from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError

K = 5


def batch(b=6, shape=(3, 4, 5), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, *shape, generator=g), torch.randint(0, K, (b,), generator=g)


def by_hand(x, y, lam, perm):
    """Mixup of a batch written out: inputs and one-hot targets, per-batch or per-sample lam."""
    lam = torch.as_tensor(lam, dtype=torch.float32)
    lx = lam.reshape(-1, *([1] * (x.dim() - 1))) if lam.dim() else lam
    onehot = torch.eye(K)[y]
    ly = lam.reshape(-1, 1) if lam.dim() else lam
    return lx * x + (1 - lx) * x[perm], ly * onehot + (1 - ly) * onehot[perm]


@pytest.mark.parametrize("per_sample", [False, True])
def test_collate_fn_mixes_like_the_formula(per_sample):
    x, y = batch()
    samples = list(zip(x, y, strict=True))
    collate = mixupe.MixCollate(mixupe.Mixup(alpha=1.0, num_classes=K, per_sample=per_sample,
                                             seed=3))
    twin = mixupe.MixCollate(mixupe.Mixup(alpha=1.0, num_classes=K, per_sample=per_sample,
                                          seed=3))
    plan, _ = twin.plan(x, y)  # the same draws from an identically seeded generator
    x_before = x.clone()
    x_mix, targets = collate(samples)
    x_exp, t_exp = by_hand(x, y, plan.lam, plan.perm)
    assert torch.allclose(x_mix, x_exp, atol=1e-6) and torch.allclose(targets, t_exp, atol=1e-6)
    assert torch.equal(x, x_before)  # the caller's batch is not modified
    assert targets.dtype == torch.float32 and torch.allclose(targets.sum(1), torch.ones(6))
    # Called on an already collated batch with the same lam and pairing: the same result.
    again = collate.mix(x, y, lam=plan.lam, perm=plan.perm)
    assert torch.allclose(again[0], x_exp, atol=1e-6) and torch.allclose(again[1], t_exp)


def mixed_losses(logits, y, lam, perm, **ce):
    """lam CE(f, y) + (1 - lam) CE(f, y[perm]) per sample, from integer labels (torch's CE)."""
    a = F.cross_entropy(logits, y, reduction="none", **ce)
    b = F.cross_entropy(logits, y[perm], reduction="none", **ce)
    return lam * a + (1 - lam) * b


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("per_sample", [False, True])
def test_loss_on_mixed_targets_equals_mixed_losses(per_sample, smoothing):
    x, y = batch(b=8)
    collate = mixupe.MixCollate(mixupe.Mixup(alpha=0.4, num_classes=K, per_sample=per_sample,
                                             label_smoothing=smoothing, seed=1))
    g = torch.Generator().manual_seed(5)
    lam = torch.rand(8, generator=g) if per_sample else torch.tensor(0.3)
    perm = torch.randperm(8, generator=g)
    _, targets = collate.mix(x, y, lam=lam, perm=perm)
    logits = torch.randn(8, K, generator=g)
    expected = mixed_losses(logits, y, lam, perm, label_smoothing=smoothing)
    # torch's cross-entropy with probability targets, each reduction
    assert torch.allclose(F.cross_entropy(logits, targets, reduction="none"), expected, atol=1e-5)
    assert torch.allclose(F.cross_entropy(logits, targets), expected.mean(), atol=1e-5)
    assert torch.allclose(F.cross_entropy(logits, targets, reduction="sum"), expected.sum(),
                          atol=1e-4)
    # the library's soft cross-entropy, each reduction
    assert torch.allclose(MF.soft_cross_entropy(logits, targets, reduction="none"), expected,
                          atol=1e-5)
    assert torch.allclose(MF.soft_cross_entropy(logits, targets), expected.mean(), atol=1e-5)
    assert torch.allclose(MF.soft_cross_entropy(logits, targets, reduction="sum"),
                          expected.sum(), atol=1e-4)
    # binary cross-entropy per class, the multi-label form of the same identity
    onehot = torch.eye(K)[y]
    bce = lambda t: F.binary_cross_entropy_with_logits(logits, t, reduction="none").sum(1)  # noqa: E731
    if smoothing == 0:
        lam_col = lam.reshape(-1) if lam.dim() else lam
        mixed = lam_col * bce(onehot) + (1 - lam_col) * bce(onehot[perm])
        assert torch.allclose(bce(targets), mixed, atol=1e-5)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_collate_then_loss_equals_the_mixup_objective(smoothing):
    x, y = batch(b=7, shape=(6,))
    net = torch.nn.Sequential(torch.nn.Linear(6, 9), torch.nn.Tanh(), torch.nn.Linear(9, K))
    mixer = mixupe.Mixup(alpha=1.0, num_classes=K, label_smoothing=smoothing, seed=0)
    perm = torch.tensor([3, 0, 6, 1, 5, 2, 4])
    x_mix, targets = mixupe.MixCollate(mixer).mix(x, y, lam=0.65, perm=perm)
    out = mixer(net, x, y, lam=0.65, perm=perm)
    assert torch.allclose(F.cross_entropy(net(x_mix), targets), out.loss, atol=1e-6)


def test_cutmix_targets_weigh_the_pixels_each_sample_shows():
    x, y = batch(b=6, shape=(2, 7, 9), seed=4)
    collate = mixupe.MixCollate(mixupe.CutMix(alpha=1.0, num_classes=K, per_sample=True, seed=2))
    perm = torch.tensor([1, 2, 3, 4, 5, 0])
    x_mix, targets = collate.mix(x, y, perm=perm)
    # The kept fraction counted from the pixels themselves (the inputs are continuous, so a
    # pixel equals its own or its partner's value, never both).
    own = (x_mix == x).flatten(1).float().mean(1)
    partner = (x_mix == x[perm]).flatten(1).float().mean(1)
    assert torch.allclose(own + partner, torch.ones(6))
    onehot = torch.eye(K)[y]
    expected = own[:, None] * onehot + partner[:, None] * onehot[perm]
    assert torch.allclose(targets, expected, atol=1e-6)
    logits = torch.randn(6, K, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(F.cross_entropy(logits, targets, reduction="none"),
                          mixed_losses(logits, y, own, perm), atol=1e-5)


def test_nonlinear_losses_differ_by_the_documented_terms():
    """Brier: smaller by lam (1 - lam) |Y_a - Y_b|^2; KL: off by the target entropy. Both
    differences are constant in the model, so the logits' gradients still agree."""
    y = torch.tensor([0, 1, 2, 3])
    perm = torch.tensor([1, 2, 0, 3])  # a permutation (sample 3 is paired with itself)
    lam = 0.3
    onehot = torch.eye(K)[y]
    _, targets = mixupe.MixCollate(mixupe.Mixup(num_classes=K)).mix(
        torch.zeros(4, 2), y, lam=lam, perm=perm)
    logits = torch.randn(4, K, generator=torch.Generator().manual_seed(0), requires_grad=True)

    def brier(t):
        return (torch.softmax(logits, 1) - t).pow(2).sum(1)

    def kl(t):
        return F.kl_div(torch.log_softmax(logits, 1), t, reduction="none").sum(1)

    gap = lam * (1 - lam) * (onehot - onehot[perm]).pow(2).sum(1)
    mixed = lam * brier(onehot) + (1 - lam) * brier(onehot[perm])
    assert torch.allclose(brier(targets), mixed - gap, atol=1e-6)
    entropy = -(targets * torch.log(targets.clamp_min(1e-30))).sum(1)
    mixed_kl = lam * kl(onehot) + (1 - lam) * kl(onehot[perm])
    assert torch.allclose(kl(targets), mixed_kl - entropy, atol=1e-5)
    assert bool((gap[:3] > 0).all()) and float(gap[3]) == 0.0  # sample 3 is paired with itself
    for loss_on_targets, loss_mixed in ((brier(targets), mixed), (kl(targets), mixed_kl)):
        g1, = torch.autograd.grad(loss_on_targets.sum(), logits, retain_graph=True)
        g2, = torch.autograd.grad(loss_mixed.sum(), logits, retain_graph=True)
        assert torch.allclose(g1, g2, atol=1e-6)


def _lambdas(loader):
    """Each batch's lambda, read off one-hot inputs: a sample paired with another shows lam and
    1 - lam (a batch of 8 is left unpaired only by the identity permutation, p = 1/40320)."""
    out = []
    for x_mix, _ in loader:
        row = next(i for i in range(x_mix.shape[0]) if int((x_mix[i] > 0).sum()) == 2)
        out.append(round(float(x_mix[row][x_mix[row] > 0].min()), 6))  # min(lam, 1 - lam)
    return out


def test_workers_draw_their_own_lambdas_each_epoch_reproducibly():
    n = 32
    data = TensorDataset(torch.eye(n), torch.arange(n) % 2)

    def run(workers, seed):
        collate = mixupe.MixCollate(mixupe.Mixup(alpha=1.0, num_classes=2, seed=7))
        loader = DataLoader(data, batch_size=8, collate_fn=collate, num_workers=workers,
                            generator=torch.Generator().manual_seed(seed))
        return [_lambdas(loader) for _ in range(2)]  # two epochs

    first, second = run(2, seed=0)
    assert len(set(first + second)) == 8  # no repeats across workers or epochs
    assert run(2, seed=0) == [first, second]  # reproducible from the DataLoader's generator
    assert run(2, seed=1)[0] != first
    # In the main process the mixer's own generator is used: an identical mixer repeats it.
    main_first, main_second = run(0, seed=0)
    assert main_first != main_second
    assert run(0, seed=5) == [main_first, main_second]


def test_workers_under_spawn_mix_like_a_plain_loop():
    """Issue 23.17: under spawn/forkserver the workers crashed unpickling the mixer's
    torch.Generator ("unable to resize file"). Each batch equals the formula with lambda and
    the pairing drawn, in a plain loop, from the worker's generator: seeded with the mixer's
    initial seed XOR (the DataLoader's base seed + worker id), batches dealt round-robin."""
    n, size, seed = 24, 4, 11
    g = torch.Generator().manual_seed(0)
    x_all, y_all = torch.randn(n, 3, generator=g), torch.arange(n) % K
    collate = mixupe.MixCollate(mixupe.Mixup(alpha=1.0, num_classes=K, seed=seed))
    loader = DataLoader(TensorDataset(x_all, y_all), batch_size=size, collate_fn=collate,
                        num_workers=2, multiprocessing_context="spawn",
                        generator=torch.Generator().manual_seed(3))
    got = list(loader)
    base = int(torch.empty((), dtype=torch.int64).random_(generator=torch.Generator()
                                                          .manual_seed(3)))
    workers = [torch.Generator().manual_seed((seed ^ (base + w)) % (1 << 63)) for w in (0, 1)]
    assert len(got) == n // size
    for b, (x_mix, targets) in enumerate(got):
        gen_b = workers[b % 2]
        lam = MF.sample_lambda(1.0, generator=gen_b)
        perm = MF.sample_permutation(size, generator=gen_b)
        x, y = x_all[b * size:(b + 1) * size], y_all[b * size:(b + 1) * size]
        x_exp, t_exp = by_hand(x, y, lam, perm)
        torch.testing.assert_close(x_mix, x_exp)
        torch.testing.assert_close(targets, t_exp)


def test_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"model-free mixer.*ManifoldMixup.*training step"):
        mixupe.MixCollate(mixupe.ManifoldMixup(layers=["input"], num_classes=K))
    with pytest.raises(ConfigError, match=r"model-free mixer.*got MixupE"):
        mixupe.MixCollate(mixupe.MixupE(num_classes=K))
    with pytest.raises(ConfigError, match=r"model-free mixer.*got ERM"):
        mixupe.MixCollate(mixupe.ERM(num_classes=K))
    collate = mixupe.MixCollate(mixupe.Mixup(num_classes=K))
    with pytest.raises(InputError, match=r"samples of the form \(input, label\)"):
        collate([(torch.zeros(2), 0, "extra"), (torch.zeros(2), 1, "extra")])
    with pytest.raises(ConfigError, match=r"integer labels need num_classes"):
        mixupe.MixCollate(mixupe.Mixup()).mix(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(InputError, match=r"label 7 is out of range"):
        collate.mix(torch.zeros(2, 3), torch.tensor([0, 7]))
