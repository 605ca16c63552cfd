"""mixupe.functional against independent computations (loops, closed forms, torch built-ins)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


# ----------------------------------------------------------------------------- sampling
def test_lambda_moments_match_beta_closed_form():
    alpha = 0.7
    lam = MF.sample_lambda(alpha, batch_size=40000, per_sample=True, generator=gen(1),
                           dtype=torch.float64)
    # Beta(a, a): mean 1/2, variance 1 / (4 (2a + 1)).
    assert abs(float(lam.mean()) - 0.5) < 0.01
    assert abs(float(lam.var()) - 1 / (4 * (2 * alpha + 1))) < 0.005
    assert float(lam.min()) >= 0.0 and float(lam.max()) <= 1.0


@pytest.mark.parametrize("alpha", [0.2, 0.5, 0.51, 1.0, 2.0, 7.5, 400.0])
def test_lambda_follows_scipy_beta_by_kolmogorov_smirnov(alpha):
    """20000 per-sample draws against scipy's Beta(alpha, alpha) CDF.

    Tolerance: the KS statistic must stay below the two-sided 0.1 % critical value
    sqrt(-ln(0.0005) / 2) / sqrt(n) = 0.0138; the same draws against Beta(1.1 alpha, alpha)
    must exceed it, so the test can tell a slightly wrong distribution apart.
    """
    from scipy import stats

    n = 20000
    lam = MF.sample_lambda(alpha, batch_size=n, per_sample=True, generator=gen(7),
                           dtype=torch.float64).numpy()
    critical = math.sqrt(-math.log(0.0005) / 2) / math.sqrt(n)
    assert stats.kstest(lam, stats.beta(alpha, alpha).cdf).statistic < critical
    assert stats.kstest(lam, stats.beta(1.1 * alpha, alpha).cdf).statistic > critical
    # per-batch draws come from the same distribution
    g = gen(9)
    per_batch = [float(MF.sample_lambda(alpha, generator=g)) for _ in range(2000)]
    assert stats.kstest(per_batch, stats.beta(alpha, alpha).cdf).pvalue > 1e-3


def test_lambda_sampling_uses_only_public_generator_aware_calls():
    import inspect

    source = inspect.getsource(MF.sample_lambda).split('if method != "transform"')[1]
    assert "torch._" not in source and "_sample_dirichlet" not in source  # the default path
    # one generator state fixes the draws; the next call continues the stream
    g1, g2 = gen(5), gen(5)
    a = MF.sample_lambda(0.4, batch_size=9, per_sample=True, generator=g1)
    b = MF.sample_lambda(0.4, batch_size=9, per_sample=True, generator=g2)
    assert torch.equal(a, b) and torch.equal(g1.get_state(), g2.get_state())
    assert not torch.equal(MF.sample_lambda(0.4, batch_size=9, per_sample=True, generator=g1), a)
    # tiny alpha does not underflow into NaN: Beta(0.01, 0.01) puts its mass near 0 and 1
    tiny = MF.sample_lambda(0.01, batch_size=5000, per_sample=True, generator=gen(1),
                            dtype=torch.float64)
    assert bool(torch.isfinite(tiny).all()) and float(tiny.min()) >= 0 and float(tiny.max()) <= 1
    assert float(((tiny < 0.01) | (tiny > 0.99)).double().mean()) > 0.9


def test_the_legacy_sampler_reproduces_torch_dirichlet_draws_and_the_default_avoids_it(
        monkeypatch):
    want = torch._sample_dirichlet(torch.full((6, 2), 0.3, dtype=torch.float64),
                                   generator=gen(4))[:, 0]
    got = MF.sample_lambda(0.3, batch_size=6, per_sample=True, generator=gen(4),
                           dtype=torch.float64, method="dirichlet")
    assert torch.equal(got, want)

    def refuse(*args, **kwargs):
        raise AssertionError("the default sampler called the private Dirichlet sampler")

    monkeypatch.setattr(torch, "_sample_dirichlet", refuse)
    assert MF.sample_lambda(0.3, batch_size=6, per_sample=True, generator=gen(4)).shape == (6,)
    monkeypatch.delattr(torch, "_sample_dirichlet")
    with pytest.raises(ConfigError, match=r"method='dirichlet' needs torch._sample_dirichlet"):
        MF.sample_lambda(0.3, generator=gen(4), method="dirichlet")
    with pytest.raises(ConfigError, match=r"method='beta' is not a lambda sampler"):
        MF.sample_lambda(0.3, generator=gen(4), method="beta")


def test_lambda_shapes_and_per_batch_scalar():
    assert MF.sample_lambda(1.0, batch_size=7, generator=gen()).shape == ()
    assert MF.sample_lambda(1.0, batch_size=7, per_sample=True, generator=gen()).shape == (7,)


def test_same_seed_same_draws_different_seed_different_draws():
    a = (MF.sample_lambda(1.0, generator=gen(3)), MF.sample_permutation(50, generator=gen(3)))
    b = (MF.sample_lambda(1.0, generator=gen(3)), MF.sample_permutation(50, generator=gen(3)))
    c = MF.sample_permutation(50, generator=gen(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c)


def test_global_rng_untouched():
    before = torch.random.get_rng_state().clone()
    g = gen(0)
    MF.sample_lambda(1.0, batch_size=5, per_sample=True, generator=g)
    MF.sample_permutation(5, generator=g)
    MF.cutmix_mask((4, 6), torch.tensor(0.5), generator=g)
    assert torch.equal(before, torch.random.get_rng_state())


def test_permutation_is_a_permutation():
    perm = MF.sample_permutation(33, generator=gen(2))
    assert sorted(perm.tolist()) == list(range(33))


# ----------------------------------------------------------------------------- mixing
def test_mix_inputs_matches_loop_and_does_not_mutate():
    x = randn(5, 3, 2)
    x_copy = x.clone()
    perm = torch.tensor([3, 0, 4, 1, 2])
    for lam in (0.3, torch.tensor([0.1, 0.2, 0.3, 0.9, 1.0], dtype=torch.float64)):
        got = MF.mix_inputs(x, perm, lam)
        for i in range(5):
            li = float(lam) if isinstance(lam, float) else float(lam[i])
            torch.testing.assert_close(got[i], li * x_copy[i] + (1 - li) * x_copy[perm[i]])
    assert torch.equal(x, x_copy)


def test_mix_inputs_keeps_float64_for_a_python_float_lambda():
    x = randn(4, 3)
    perm = torch.tensor([1, 0, 3, 2])
    got = MF.mix_inputs(x, perm, 0.123)
    assert torch.equal(got, x * 0.123 + x[perm] * (1 - 0.123))  # 0.123 not rounded to float32
    t = MF.mix_targets(torch.tensor([0, 1, 2, 0]), perm, 0.123, num_classes=3,
                       dtype=torch.float64)
    assert float(t[0, 0]) == 0.123


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_mix_inputs_refuses_integer_inputs(dtype):
    x = torch.tensor([[10, 0], [20, 0], [30, 0], [40, 0]]).to(dtype)
    with pytest.raises(InputError, match=rf"cannot mix inputs of dtype {dtype}.*x.float\(\) "
                                         r"/ 255.*ManifoldMixup"):
        MF.mix_inputs(x, torch.tensor([1, 0, 3, 2]), 0.7)


def test_mix_inputs_keeps_half_precision():
    x = randn(4, 3).to(torch.bfloat16)
    assert MF.mix_inputs(x, torch.tensor([1, 0, 3, 2]), torch.tensor(0.3)).dtype == torch.bfloat16


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mix_targets_loop_sum_to_one_and_two_classes(smoothing):
    k = 6
    y = torch.tensor([0, 5, 2, 2, 3])
    perm = torch.tensor([1, 2, 0, 4, 3])
    lam = 0.35
    t = MF.mix_targets(y, perm, lam, num_classes=k, label_smoothing=smoothing,
                       dtype=torch.float64)
    for i in range(5):
        ref = [0.0] * k
        ref[int(y[i])] += lam
        ref[int(y[perm[i]])] += 1 - lam
        ref = [(1 - smoothing) * v + smoothing / k for v in ref]
        torch.testing.assert_close(t[i], torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(t.sum(1), torch.ones(5, dtype=torch.float64))
    above_floor = (t > smoothing / k + 1e-12).sum(1)
    assert int(above_floor.max()) <= 2


def test_mix_targets_soft_and_per_sample():
    soft = torch.softmax(randn(4, 3), 1)
    perm = torch.tensor([2, 3, 0, 1])
    lam = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    t = MF.mix_targets(soft, perm, lam, dtype=torch.float64)
    for i in range(4):
        torch.testing.assert_close(t[i], lam[i] * soft[i] + (1 - lam[i]) * soft[perm[i]])


def test_one_hot_matches_torch():
    y = torch.tensor([3, 0, 1, 1])
    assert torch.equal(MF.one_hot(y, 4), F.one_hot(y, 4).float())


def test_one_hot_of_out_of_range_labels_is_nan_so_the_loss_cannot_hide_it():
    t = MF.one_hot(torch.tensor([1, 4, -1]), 4)
    assert torch.equal(t[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    assert bool(t[1:].isnan().all())
    assert bool(MF.soft_cross_entropy(torch.zeros(3, 4), t).isnan())


def test_check_soft_targets():
    MF.check_soft_targets(torch.softmax(randn(5, 4), 1))
    MF.check_soft_targets(torch.softmax(randn(5, 4), 1).float())
    with pytest.raises(InputError, match=r"negative entry \(-0.5\).*probability distribution"):
        MF.check_soft_targets(torch.tensor([[1.5, -0.5], [0.5, 0.5]]))
    with pytest.raises(InputError, match=r"row 1 sums to 0.9, not 1.*normalise the rows"):
        MF.check_soft_targets(torch.tensor([[0.5, 0.5], [0.3, 0.6]]))


def test_soft_cross_entropy_matches_builtin_and_formula():
    logits = randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    hard = MF.soft_cross_entropy(logits, MF.one_hot(y, 4, dtype=torch.float64))
    torch.testing.assert_close(hard, F.cross_entropy(logits, y))
    soft = torch.softmax(randn(6, 4, seed=1), 1)
    rows = MF.soft_cross_entropy(logits, soft, reduction="none")
    for i in range(6):
        lse = math.log(sum(math.exp(v) for v in logits[i].tolist()))
        ref = sum(float(soft[i, k]) * (lse - float(logits[i, k])) for k in range(4))
        assert abs(float(rows[i]) - ref) < 1e-12
    torch.testing.assert_close(MF.soft_cross_entropy(logits, soft, reduction="sum"), rows.sum())


# ----------------------------------------------------------------------------- CutMix boxes
def _box_extent(mask_row: torch.Tensor) -> tuple[int, int]:
    """Rows and columns touched by a 2-D mask, counted by a plain loop."""
    rows = [r for r in range(mask_row.shape[0]) if bool(mask_row[r].any())]
    cols = [c for c in range(mask_row.shape[1]) if bool(mask_row[:, c].any())]
    return len(rows), len(cols)


@pytest.mark.parametrize("shape", [(4, 20), (9, 5), (7, 7)])
def test_cutmix_lambda_is_kept_fraction_2d_and_box_is_rectangle(shape):
    h, w = shape
    g = gen(5)
    lam_in = MF.sample_lambda(1.0, batch_size=64, per_sample=True, generator=g,
                              dtype=torch.float64)
    mask, lam = MF.cutmix_mask(shape, lam_in, generator=g)
    assert mask.shape == (64, h, w)
    for b in range(64):
        pasted = sum(int(mask[b, r, c]) for r in range(h) for c in range(w))
        assert abs(float(lam[b]) - (1 - pasted / (h * w))) < 1e-12
        nr, nc = _box_extent(mask[b])
        assert pasted == nr * nc  # a filled rectangle
        # height follows H and width follows W (not swapped)
        r = math.sqrt(1 - float(lam_in[b]))
        assert nr <= math.floor(r * h) and nc <= math.floor(r * w)


def test_cutmix_unclipped_box_has_the_requested_size():
    # Centred boxes that fit are never clipped: size floor(sqrt(1-lam) H) x floor(sqrt(1-lam) W).
    h, w = 8, 30
    hits = 0
    for seed in range(40):
        mask, _ = MF.cutmix_mask((h, w), torch.tensor(0.75), generator=gen(seed))
        nr, nc = _box_extent(mask[0])
        if nr > 0 and not bool(mask[0, 0].any()) and not bool(mask[0, -1].any()) and not bool(
            mask[0, :, 0].any()
        ) and not bool(mask[0, :, -1].any()):
            assert (nr, nc) == (4, 15)
            hits += 1
    assert hits > 0


def test_cutmix_lambda_is_kept_fraction_1d():
    g = gen(6)
    for length in (13, 50):
        lam_in = MF.sample_lambda(1.0, batch_size=32, per_sample=True, generator=g)
        mask, lam = MF.cutmix_mask((length,), lam_in, generator=g)
        for b in range(32):
            pasted = int(mask[b].sum())
            assert abs(float(lam[b]) - (1 - pasted / length)) < 1e-6
            idx = [i for i in range(length) if bool(mask[b, i])]
            assert idx == list(range(idx[0], idx[-1] + 1)) if idx else True
            assert pasted <= math.floor((1 - float(lam_in[b])) * length)


def test_cutmix_uncorrected_lambda_is_returned_unchanged():
    lam_in = torch.tensor(0.37)
    _, lam = MF.cutmix_mask((6, 6), lam_in, generator=gen(), correct_lambda=False)
    assert lam.shape == () and float(lam) == pytest.approx(0.37)


# ----------------------------------------------------------------------------- MixupE pieces
def test_mixupe_constant_closed_form():
    for a in (0.5, 1.0, 2.0):
        # c = 1 - E[Beta(a + 1, a)] = 1 - (a + 1) / (2a + 1)
        assert MF.mixupe_constant(a) == pytest.approx(1 - (a + 1) / (2 * a + 1))


def test_fast_score_loop_and_gradient_path():
    logits = randn(5, 4).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 0])
    yy = MF.one_hot(y, 4, dtype=torch.float64)
    s3 = MF.fast_score(logits, yy, detach_probs=False)
    s4 = MF.fast_score(logits, yy, detach_probs=True)
    for i in range(5):
        p = torch.softmax(logits[i].detach(), 0)
        ref = sum(float((yy[i, k] - p[k]) * logits[i, k].detach()) for k in range(4))
        assert abs(float(s3[i]) - ref) < 1e-12 and abs(float(s4[i]) - ref) < 1e-12
    # version 4's gradient with respect to the logits is (Y - p); version 3's differs.
    (g4,) = torch.autograd.grad(s4.sum(), logits)
    torch.testing.assert_close(g4, yy - torch.softmax(logits.detach(), 1))
    (g3,) = torch.autograd.grad(s3.sum(), logits)
    assert not torch.allclose(g3, g4)


def test_directional_derivative_score_matches_jacobian_loop():
    w1 = randn(3, 5, seed=1)
    w2 = randn(5, 4, seed=2)

    def f(z):
        return torch.tanh(z @ w1) @ w2

    x = randn(6, 3, seed=3).requires_grad_()
    d = randn(6, 3, seed=4)
    yy = MF.one_hot(torch.tensor([0, 1, 2, 3, 0, 1]), 4, dtype=torch.float64)
    s = MF.directional_derivative_score(f(x), yy, inputs=x, direction=d)
    for i in range(6):
        jac = torch.autograd.functional.jacobian(f, x[i : i + 1].detach())[0, :, 0, :]  # (K, D)
        r = torch.softmax(f(x[i : i + 1]).detach()[0], 0) - yy[i]
        assert abs(float(s[i]) - float(r @ (jac @ d[i]))) < 1e-12
