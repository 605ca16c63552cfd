"""MixupE versions 1-4 against a plain reference written from docs/METHOD.md's table (float64)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import mixupe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def seeded(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    g = gen(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bn" in name or name.startswith("1."):  # BatchNorm affine: near identity
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return model.double()


def make_mlp(bias: bool = True) -> nn.Module:
    return seeded(nn.Sequential(nn.Linear(4, 8, bias=bias), nn.Tanh() if bias else nn.ReLU(),
                                nn.Linear(8, 3, bias=bias)).double())


def make_cnn(batchnorm: bool = True) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(1, 2, 3, padding=1)]
    layers.append(nn.BatchNorm2d(2) if batchnorm else nn.Identity())
    layers += [nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 5, 3)]
    return seeded(nn.Sequential(*layers).double())


K = 3
Y = torch.tensor([0, 1, 2, 1, 0, 2])
PERM = torch.tensor([3, 5, 0, 4, 1, 2])
LAM = 0.3
ALPHA = 2.0


def inputs_for(model_kind: str) -> torch.Tensor:
    return randn(6, 4, seed=1) if model_kind == "mlp" else randn(6, 1, 4, 5, seed=1)


def ce(row: torch.Tensor, label: int) -> torch.Tensor:
    return torch.logsumexp(row, 0) - row[label]


def reference(net, x, y, *, version, eta, threshold, rescale, fast_sign, xbar, lam=LAM,
              perm=PERM):
    """docs/METHOD.md's table, one sample at a time; the Jacobian from autograd.functional."""
    b = x.shape[0]
    onehot = torch.eye(K, dtype=torch.float64)[y]
    x_mix = torch.stack([lam * x[i] + (1 - lam) * x[int(perm[i])] for i in range(b)])
    f_mix = net(x_mix)
    l_mix = sum(lam * ce(f_mix[i], int(y[i])) + (1 - lam) * ce(f_mix[i], int(y[int(perm[i])]))
                for i in range(b)) / b
    c = ALPHA / (2 * ALPHA + 1)
    scores = []
    if version in (1, 2):
        xc = x.detach().clone()
        f = net(xc)
        r = (torch.softmax(f, 1) - onehot).detach()
        jac = torch.autograd.functional.jacobian(net, xc, create_graph=True)  # (B, K, B, ...)
        for j in range(b):
            d_j = xbar - x[j]
            s_j = sum(r[i, k] * (jac[i, k, j] * d_j).sum() for i in range(b) for k in range(K))
            scores.append(s_j)
    else:
        f = net(x)
        for i in range(b):
            p = torch.softmax(f[i], 0)
            if version == 4:
                p = p.detach()
            scores.append(sum((onehot[i, k] - p[k]) * f[i, k] for k in range(K)))
    if version == 2:
        term = sum(s.abs() for s in scores)
    elif version == 4 or threshold is None:
        term = sum(scores)
    else:
        term = sum(s for s in scores if float(s.detach()) < threshold)
    sign = 1.0 if version in (1, 2) else fast_sign
    loss = l_mix + sign * eta * c * term / b
    if rescale:
        loss = (abs(float(l_mix.detach())) / abs(float(loss.detach()))) * loss
    return loss, torch.stack([s.detach() for s in scores])


def grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def run_library(net, x, *, lam=LAM, perm=PERM, xbar=None, **options):
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), **options)
    if xbar is not None:
        obj.set_data_mean(xbar)
    out = obj(net, x, Y[: x.shape[0]], lam=lam, perm=perm)
    out.loss.backward()
    return out, grads(net)


def pick_threshold(scores: torch.Tensor) -> float:
    s = scores.sort().values
    return float((s[2] + s[3]) / 2)  # half the batch below it


@pytest.mark.parametrize("model_kind", ["mlp", "cnn_bn"])
@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("select", [False, True])
@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_loss_and_gradients_equal_reference(version, select, rescale, model_kind):
    base = make_mlp() if model_kind == "mlp" else make_cnn(batchnorm=True)
    x = inputs_for(model_kind)
    xbar = randn(*x.shape[1:], seed=9) * 0.3
    eta = 0.5
    # scores first, to put the threshold inside their range
    _, scores = reference(copy.deepcopy(base), x, Y, version=version, eta=eta, threshold=None,
                          rescale=False, fast_sign=-1, xbar=xbar)
    threshold = pick_threshold(scores) if select else None
    ref_net, lib_net = copy.deepcopy(base), copy.deepcopy(base)
    ref_loss, ref_scores = reference(ref_net, x, Y, version=version, eta=eta,
                                     threshold=threshold, rescale=rescale, fast_sign=-1,
                                     xbar=xbar)
    ref_loss.backward()
    out, lib_grads = run_library(lib_net, x, xbar=xbar if version in (1, 2) else None,
                                 version=version, eta=eta, threshold=threshold, rescale=rescale)
    torch.testing.assert_close(out.scores.detach(), ref_scores, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(out.loss.detach(), ref_loss.detach(), rtol=1e-6, atol=1e-10)
    for g_lib, g_ref in zip(lib_grads, grads(ref_net), strict=True):
        torch.testing.assert_close(g_lib, g_ref, rtol=1e-6, atol=1e-10)
    if select and version in (1, 3):
        assert out.stats["selected_fraction"] == pytest.approx(0.5)


@pytest.mark.parametrize("version", [3, 4])
def test_theory_consistent_fast_sign(version):
    base, x = make_mlp(), inputs_for("mlp")
    ref_net, lib_net = copy.deepcopy(base), copy.deepcopy(base)
    ref_loss, _ = reference(ref_net, x, Y, version=version, eta=0.5, threshold=1.0,
                            rescale=False, fast_sign=1, xbar=None)
    ref_loss.backward()
    out, lib_grads = run_library(lib_net, x, version=version, eta=0.5, threshold=1.0,
                                 rescale=False, fast_sign=1)
    torch.testing.assert_close(out.loss.detach(), ref_loss.detach(), rtol=1e-6, atol=1e-10)
    for g_lib, g_ref in zip(lib_grads, grads(ref_net), strict=True):
        torch.testing.assert_close(g_lib, g_ref, rtol=1e-6, atol=1e-10)


def test_version1_derivative_equals_central_finite_difference():
    net, x = make_mlp(), inputs_for("mlp")
    xbar = randn(4, seed=9)
    out, _ = run_library(net, x, xbar=xbar, version=1, eta=0.1)
    onehot = torch.eye(K, dtype=torch.float64)[Y]
    step = 1e-5
    with torch.no_grad():
        d = xbar - x
        fd = (net(x + step * d) - net(x - step * d)) / (2 * step)
        r = torch.softmax(net(x), 1) - onehot
    for i in range(6):
        assert abs(float(out.scores[i].detach()) - float(r[i] @ fd[i])) < 1e-8


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("model_kind", ["mlp", "cnn", "cnn_bn_eval"])
@pytest.mark.parametrize("clean_pass", ["separate", "fused"])
def test_vjp_and_jvp_agree_without_sample_interaction(version, model_kind, clean_pass):
    base = {"mlp": make_mlp, "cnn": lambda: make_cnn(batchnorm=False),
            "cnn_bn_eval": lambda: make_cnn(batchnorm=True).eval()}[model_kind]()
    x = inputs_for("mlp" if model_kind == "mlp" else "cnn")
    xbar = randn(*x.shape[1:], seed=9) * 0.3
    results = {}
    for derivative in ("vjp", "jvp"):
        results[derivative] = run_library(copy.deepcopy(base), x, xbar=xbar, version=version,
                                          eta=0.5, threshold=0.0, derivative=derivative,
                                          clean_pass=clean_pass)
    (out_v, g_v), (out_j, g_j) = results["vjp"], results["jvp"]
    torch.testing.assert_close(out_j.scores.detach(), out_v.scores.detach(), rtol=1e-6,
                               atol=1e-10)
    torch.testing.assert_close(out_j.loss.detach(), out_v.loss.detach(), rtol=1e-6, atol=1e-10)
    for a, b in zip(g_j, g_v, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)


def test_vjp_and_jvp_with_train_batchnorm_differ_per_sample_but_not_in_sum():
    base, x = make_cnn(batchnorm=True), inputs_for("cnn")
    xbar = randn(*x.shape[1:], seed=9) * 0.3
    out_v, _ = run_library(copy.deepcopy(base), x, xbar=xbar, version=2, derivative="vjp")
    out_j, _ = run_library(copy.deepcopy(base), x, xbar=xbar, version=2, derivative="jvp")
    assert not torch.allclose(out_v.scores, out_j.scores, rtol=1e-6, atol=1e-10)
    torch.testing.assert_close(out_v.scores.sum().detach(), out_j.scores.sum().detach())


def _flat_grad(net: nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in net.parameters()])


def _shift(net: nn.Module, direction: torch.Tensor, step: float) -> None:
    with torch.no_grad():
        offset = 0
        for p in net.parameters():
            p.add_(step * direction[offset : offset + p.numel()].reshape(p.shape))
            offset += p.numel()


def bn_mlp() -> nn.Module:
    # BatchNorm after a non-linearity: right after the first Linear it would make the whole
    # batch's derivative along x_bar - x (an affine map of the batch) vanish.
    return seeded(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.BatchNorm1d(6),
                                nn.Tanh(), nn.Linear(6, K)))


def in_cnn() -> nn.Module:
    return seeded(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.InstanceNorm2d(2, affine=True),
                                nn.Tanh(), nn.Flatten(), nn.Linear(2 * 4 * 5, K)))


def version1_by_hand(net, x, xbar, *, eta, fused, r0=None, t=1e-4):
    """Version 1 without selection or rescaling, from METHOD.md, with the residual ``r0`` held
    fixed (it is detached in the method) and the directional derivative of the whole batch's
    ``sum_i r_i^T f(x)_i`` along ``xbar - x`` as a central difference (train-mode
    normalisation couples the samples, and the sum of the per-sample scores is this
    derivative)."""
    b = x.shape[0]
    x_mix = LAM * x + (1 - LAM) * x[PERM]

    def run(clean_in):
        if fused:
            out = net(torch.cat([x_mix, clean_in]))
            return out[:b], out[b:]
        return net(x_mix), net(clean_in)

    f_mix, f_clean = run(x)
    l_mix = sum(LAM * ce(f_mix[i], int(Y[i])) + (1 - LAM) * ce(f_mix[i], int(Y[int(PERM[i])]))
                for i in range(b)) / b
    if r0 is None:
        r0 = (torch.softmax(f_clean, 1) - torch.eye(K, dtype=torch.float64)[Y]).detach()
    d = xbar - x
    up, down = run(x + t * d)[1], run(x - t * d)[1]
    term = (r0 * (up - down)).sum() / (2 * t)
    return l_mix + eta * (ALPHA / (2 * ALPHA + 1)) * term / b, r0


@pytest.mark.parametrize("derivative", ["jvp", "vjp"])
@pytest.mark.parametrize("clean_pass", ["separate", "fused"])
@pytest.mark.parametrize("model_kind", ["bn_mlp", "instance_norm_cnn"])
def test_parameter_gradient_with_batch_statistics_equals_finite_differences(
    model_kind, clean_pass, derivative
):
    """The parameter gradient of version 1 along a random direction equals central
    differences of the loss written by hand (float64, train-mode normalisation). PyTorch's own
    forward-mode rule for batch statistics fails this (0.054 against -0.052 in the issue)."""
    net = bn_mlp() if model_kind == "bn_mlp" else in_cnn()
    x = inputs_for("mlp" if model_kind == "bn_mlp" else "cnn")
    xbar = randn(*x.shape[1:], seed=9) * 0.3
    eta, fused = 2.0, clean_pass == "fused"
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1, eta=eta,
                        threshold=None, rescale=False, derivative=derivative,
                        clean_pass=clean_pass)
    obj.set_data_mean(xbar)
    out = obj(net, x, Y, lam=LAM, perm=PERM)
    out.loss.backward()
    g_lib = _flat_grad(net)
    net.zero_grad()
    mixupe.Mixup(alpha=ALPHA, num_classes=K)(net, x, Y, lam=LAM, perm=PERM).loss.backward()
    g_term = g_lib - _flat_grad(net)  # what the MixupE term adds
    assert float(g_term.norm()) > 0.05
    with torch.no_grad():
        hand, r0 = version1_by_hand(net, x, xbar, eta=eta, fused=fused)
    assert float(out.loss.detach()) == pytest.approx(float(hand), rel=1e-7)
    step = 1e-4
    random = torch.randn(g_lib.shape, generator=gen(3), dtype=torch.float64)
    for direction in (random, g_term / g_term.norm()):
        values = []
        for sign in (1, -1):
            _shift(net, direction, sign * step)
            with torch.no_grad():
                values.append(float(version1_by_hand(net, x, xbar, eta=eta, fused=fused,
                                                     r0=r0)[0]))
            _shift(net, direction, -sign * step)
        numeric = (values[0] - values[1]) / (2 * step)
        analytic = float(g_lib @ direction)
        assert abs(analytic - numeric) < 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)


def test_jvp_running_statistics_update_like_pytorch():
    """The elementary normalisation of the jvp pass updates running statistics as BatchNorm
    and InstanceNorm do."""
    for make, x in ((bn_mlp, inputs_for("mlp")), (in_cnn, inputs_for("cnn"))):
        base = make()
        for module in base.modules():
            if isinstance(module, nn.InstanceNorm2d):
                module.track_running_stats = True
                module.register_buffer("running_mean", torch.zeros(2, dtype=torch.float64))
                module.register_buffer("running_var", torch.ones(2, dtype=torch.float64))
                module.register_buffer("num_batches_tracked", torch.tensor(0))
        nets = {d: copy.deepcopy(base) for d in ("vjp", "jvp")}
        for derivative, net in nets.items():
            obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1,
                                derivative=derivative)
            obj.set_data_mean(torch.zeros(x.shape[1:], dtype=torch.float64))
            obj(net, x, Y, lam=LAM, perm=PERM)
        for a, b in zip(nets["vjp"].buffers(), nets["jvp"].buffers(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


class Softmaxed(nn.Module):
    """Linear, then ``op`` over the last axis, then a head (a mean over positions for 3-d x)."""

    def __init__(self, op) -> None:
        super().__init__()
        self.body, self.head, self.op = nn.Linear(4, 4), nn.Linear(4, K), op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.op(self.body(x))
        return self.head(h.mean(1) if h.dim() == 3 else h)


class Attention(nn.Module):
    """Multi-head attention with a padding mask and its weights, or PyTorch's encoder layer
    (fused attention kernel, LayerNorm, softmax)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "encoder":
            self.block = nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True)
        else:
            self.block = nn.MultiheadAttention(4, 2, batch_first=True)
        self.head = nn.Linear(4, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "encoder":
            return self.head(self.block(x).mean(1))
        padding = torch.zeros(x.shape[:2], dtype=torch.bool)
        padding[::2, -1] = True  # every other sample ignores its last position
        out, weights = self.block(x, x, x, key_padding_mask=padding, need_weights=True,
                                  average_attn_weights=False)
        return self.head(out.mean(1) + weights.mean((1, 2))[:, :1])


def sdpa_causal(t: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.scaled_dot_product_attention(t, t, t, is_causal=True)


SOFTMAX_MODELS = {
    "softmax": lambda: Softmaxed(lambda t: torch.softmax(t, -1)),
    "log_softmax": lambda: Softmaxed(lambda t: t.log_softmax(-1)),
    "softmin": lambda: Softmaxed(lambda t: torch.nn.functional.softmin(t, -1)),
    "logsumexp": lambda: Softmaxed(lambda t: t - t.logsumexp(-1, keepdim=True)),
    "layer_norm": lambda: Softmaxed(nn.LayerNorm(4)),
    "glu": lambda: Softmaxed(lambda t: torch.cat([torch.nn.functional.glu(t, -1)] * 2, -1)),
    "sdpa_causal": lambda: Softmaxed(sdpa_causal),
    "mha_masked": lambda: Attention("mha"),
    "encoder": lambda: Attention("encoder"),
    "encoder_eval": lambda: Attention("encoder").eval(),
}


@pytest.mark.parametrize("model_kind", list(SOFTMAX_MODELS))
def test_jvp_through_softmax_and_attention_equals_vjp_and_finite_differences(model_kind):
    """PyTorch's forward-mode rules for softmax/log_softmax/logsumexp (an in-place write into
    a saved tensor), layer_norm (wrong parameter gradients) and the fused attention kernels
    (none) fail under the jvp loss; their elementary forms give the vjp path's gradient and
    central differences of the loss written by hand (float64, no sample interaction)."""
    torch.manual_seed(0)
    base = seeded(SOFTMAX_MODELS[model_kind](), scale=0.7)
    x = randn(6, 4, seed=1) if model_kind in ("softmax", "layer_norm", "glu") else \
        randn(6, 5, 4, seed=1)
    xbar = randn(*x.shape[1:], seed=9) * 0.3
    grads_by = {}
    for derivative in ("vjp", "jvp"):
        net = copy.deepcopy(base)
        obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1,
                            eta=2.0, threshold=None, rescale=False, derivative=derivative)
        obj.set_data_mean(xbar)
        obj(net, x, Y, lam=LAM, perm=PERM).loss.backward()
        grads_by[derivative] = _flat_grad(net)
    torch.testing.assert_close(grads_by["jvp"], grads_by["vjp"], rtol=1e-7, atol=1e-10)
    net = copy.deepcopy(base)
    with torch.no_grad():
        _, r0 = version1_by_hand(net, x, xbar, eta=2.0, fused=False)
    direction = torch.randn(grads_by["jvp"].shape, generator=gen(3), dtype=torch.float64)
    values = []
    for sign in (1, -1):
        _shift(net, direction, sign * 1e-4)
        with torch.no_grad():
            values.append(float(version1_by_hand(net, x, xbar, eta=2.0, fused=False, r0=r0)[0]))
        _shift(net, direction, -sign * 1e-4)
    numeric = (values[0] - values[1]) / 2e-4
    assert float(grads_by["jvp"] @ direction) == pytest.approx(numeric, rel=1e-6, abs=1e-8)


def test_forward_ad_gaps_in_pytorch_say_to_use_vjp():
    class Distances(nn.Module):  # torch.cdist has no forward-mode rule in PyTorch
        def __init__(self) -> None:
            super().__init__()
            self.body, self.head = nn.Linear(4, 4), nn.Linear(5, K)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.body(x)
            return self.head(torch.cdist(h, h).mean(1))

    net, x = Distances(), torch.randn(6, 5, 4, generator=gen(1))
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1,
                        derivative="jvp")
    obj.set_data_mean(torch.zeros(5, 4))
    with pytest.raises(mixupe.ConfigError, match=r"forward-mode AD.*derivative='vjp'"):
        obj(net, x, Y)
    vjp = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1)
    vjp.set_data_mean(torch.zeros(5, 4))
    assert vjp(net, x, Y).loss.isfinite()


def test_jvp_refuses_attention_options_it_does_not_cover():
    net = nn.MultiheadAttention(4, 2, add_zero_attn=True, batch_first=True)
    head = nn.Linear(4, K)
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=1,
                        derivative="jvp")
    obj.set_data_mean(torch.zeros(5, 4))
    model = lambda x: head(net(x, x, x)[0].mean(1))  # noqa: E731
    with pytest.raises(mixupe.ConfigError, match=r"add_zero_attn.*derivative='vjp'"):
        obj(model, torch.randn(6, 5, 4, generator=gen(1)), Y)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
@pytest.mark.parametrize("mixing", ["mixup", "manifold"])
def test_fused_equals_separate_without_batchnorm(version, mixing):
    base = make_cnn(batchnorm=False)
    x = inputs_for("cnn")
    results = []
    for clean_pass in ("separate", "fused"):
        net = copy.deepcopy(base)
        mix = (mixupe.Mixup(alpha=ALPHA, num_classes=K) if mixing == "mixup" else
               mixupe.ManifoldMixup(alpha=ALPHA, layers=["2"], num_classes=K))
        obj = mixupe.MixupE(mixing=mix, version=version, eta=0.5, clean_pass=clean_pass,
                            threshold=0.5)
        obj.set_data_mean(randn(*x.shape[1:], seed=9))
        out = obj(net, x, Y, lam=LAM, perm=PERM)
        out.loss.backward()
        results.append((out, grads(net)))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a.loss.detach(), b.loss.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a.logits.detach(), b.logits.detach(), rtol=1e-10, atol=1e-12)
    for u, v in zip(ga, gb, strict=True):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("fast_sign", [-1, 1])
def test_bias_free_relu_version1_and_version3_coincide_up_to_sign(fast_sign):
    net = make_mlp(bias=False)
    x = inputs_for("mlp")
    x = x - x.mean(0)  # centred data, x_bar = 0
    outs = {}
    for version in (1, 3):
        obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=version,
                            eta=0.5, threshold=0.0, rescale=False, fast_sign=fast_sign)
        obj.set_data_mean(torch.zeros(1, 4, dtype=torch.float64))
        outs[version] = obj(copy.deepcopy(net), x, Y, lam=LAM, perm=PERM)
    s1, s3 = outs[1].scores.detach(), outs[3].scores.detach()
    torch.testing.assert_close(s1, s3, rtol=1e-9, atol=1e-12)
    assert 0 < outs[1].stats["selected_fraction"] < 1
    assert outs[1].stats["selected_fraction"] == outs[3].stats["selected_fraction"]
    r1, r3 = outs[1].stats["regulariser"], outs[3].stats["regulariser"]
    assert abs(r1) > 1e-6
    if fast_sign == -1:
        assert r1 == pytest.approx(-r3, rel=1e-9)
    else:
        assert r1 == pytest.approx(r3, rel=1e-9)


class Chain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@pytest.mark.parametrize("derivative", ["vjp", "jvp"])
def test_manifold_version1_differentiates_at_the_layer_towards_its_running_mean(derivative):
    base, x = seeded(Chain()), inputs_for("mlp")
    lib_net, ref_net = copy.deepcopy(base), copy.deepcopy(base)
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["body"], num_classes=K),
                        version=1, eta=0.5, threshold=None, rescale=True, derivative=derivative,
                        mean_decay=0.9)
    out = obj(lib_net, x, Y, lam=LAM, perm=PERM)
    out.loss.backward()
    # reference by hand: mix at body's output, derivative of head w.r.t. h along mean(h) - h
    h = ref_net.body(x)
    h_mix = torch.stack([LAM * h[i] + (1 - LAM) * h[int(PERM[i])] for i in range(6)])
    f_mix = ref_net.head(h_mix)
    l_mix = sum(LAM * ce(f_mix[i], int(Y[i])) + (1 - LAM) * ce(f_mix[i], int(Y[int(PERM[i])]))
                for i in range(6)) / 6
    onehot = torch.eye(K, dtype=torch.float64)[Y]
    hbar = h.detach().mean(0)
    scores = []
    for i in range(6):
        hi = h[i : i + 1]
        r = (torch.softmax(ref_net.head(hi)[0], 0) - onehot[i]).detach()
        jac = torch.autograd.functional.jacobian(lambda z: ref_net.head(z)[0], hi,
                                                 create_graph=True)[:, 0, :]
        scores.append(r @ (jac @ (hbar - h[i].detach())))
    c = ALPHA / (2 * ALPHA + 1)
    loss = l_mix + 0.5 * c * sum(scores) / 6
    loss = (abs(float(l_mix.detach())) / abs(float(loss.detach()))) * loss
    loss.backward()
    torch.testing.assert_close(out.scores.detach(), torch.stack(scores).detach(), rtol=1e-6,
                               atol=1e-10)
    torch.testing.assert_close(out.loss.detach(), loss.detach(), rtol=1e-6, atol=1e-10)
    for a, b in zip(grads(lib_net), grads(ref_net), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-10)
    # the running mean: started at the first batch's mean, then an EMA with decay 0.9
    x2 = randn(6, 4, seed=5)
    obj(lib_net, x2, Y, lam=LAM, perm=PERM)
    with torch.no_grad():
        expected = 0.9 * hbar + 0.1 * lib_net.body(x2).mean(0)
    torch.testing.assert_close(obj.layer_means["body"], expected)


def test_data_mean_fit_and_set():
    obj = mixupe.MixupE(version=1, num_classes=K)
    data = randn(23, 2, 3, seed=4)
    batches = [(data[i : i + 5], Y[:1]) for i in range(0, 23, 5)]
    mean = obj.fit_data_mean(iter(batches))
    ref = torch.tensor(data.numpy().mean(axis=0))
    torch.testing.assert_close(mean, ref, rtol=0, atol=1e-14)
    assert obj.data_mean.dtype == torch.float64
    obj.set_data_mean(torch.ones(1, 2, 3))  # leading 1 accepted
    out = obj(nn.Sequential(nn.Flatten(), nn.Linear(6, K)).double(), data[:6], Y)
    assert torch.isfinite(out.loss)
    state = obj.state_dict()
    other = mixupe.MixupE(version=1, num_classes=K)
    other.load_state_dict(state)
    assert torch.equal(other.data_mean, obj.data_mean)


def test_mixupe_with_cutmix_has_cutmix_as_its_mixup_loss():
    net, x = make_cnn(batchnorm=False), inputs_for("cnn")
    cut_alone = mixupe.CutMix(alpha=ALPHA, num_classes=K, seed=4)(copy.deepcopy(net), x, Y)
    obj = mixupe.MixupE(mixing=mixupe.CutMix(alpha=ALPHA, num_classes=K, seed=4), version=3)
    out = obj(copy.deepcopy(net), x, Y)
    assert out.stats["mixup_loss"] == pytest.approx(float(cut_alone.loss.detach()), rel=1e-12)
    assert torch.equal(out.mask, cut_alone.mask)


def test_stats_describe_the_regulariser():
    net, x = make_mlp(), inputs_for("mlp")
    out, _ = run_library(net, x, version=3, eta=0.5, threshold=0.5, rescale=True)
    s = out.stats
    c = ALPHA / (2 * ALPHA + 1)
    scores = out.scores.detach()
    sel = (scores < 0.5).double()
    assert s["regulariser"] == pytest.approx(float(-0.5 * c * (sel * scores).sum() / 6))
    assert s["regulariser_ratio"] == pytest.approx(abs(s["regulariser"]) / abs(s["mixup_loss"]))
    assert s["selected_fraction"] == pytest.approx(float(sel.mean()))
    # rescaled loss has the size of the Mixup loss
    assert abs(s["loss"]) == pytest.approx(abs(s["mixup_loss"]), rel=1e-12)


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_batch_of_one_and_odd_batches_equal_the_reference(version):
    """A batch of one is paired with itself, so L_mix is the plain cross-entropy whatever
    lambda is drawn; the loss, scores and gradients equal METHOD.md's table by hand."""
    base, x = make_mlp(), inputs_for("mlp")
    xbar = randn(4, seed=9) * 0.3
    for b in (1, 5):
        obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K, seed=b),
                            version=version, eta=0.5, threshold=None, rescale=False)
        obj.set_data_mean(xbar)
        lib_net, ref_net = copy.deepcopy(base), copy.deepcopy(base)
        out = obj(lib_net, x[:b], Y[:b])  # lambda and the pairing drawn by the objective
        out.loss.backward()
        if b == 1:
            assert out.perm.tolist() == [0] and 0 < float(out.lam) < 1
        ref_loss, ref_scores = reference(ref_net, x[:b], Y[:b], version=version, eta=0.5,
                                         threshold=None, rescale=False, fast_sign=-1, xbar=xbar,
                                         lam=float(out.lam), perm=out.perm)
        ref_loss.backward()
        torch.testing.assert_close(out.scores.detach(), ref_scores, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out.loss.detach(), ref_loss.detach(), rtol=1e-9, atol=1e-12)
        for g_lib, g_ref in zip(grads(lib_net), grads(ref_net), strict=True):
            torch.testing.assert_close(g_lib, g_ref, rtol=1e-9, atol=1e-12)
    # and by hand for b = 1, version 3: L = CE(f, y) - eta c (Y - p)^T f
    if version == 3:
        with torch.no_grad():
            f = base(x[:1])[0]
            p = torch.softmax(f, 0)
            onehot = torch.eye(K, dtype=torch.float64)[int(Y[0])]
            hand = ce(f, int(Y[0])) - 0.5 * (ALPHA / (2 * ALPHA + 1)) * ((onehot - p) @ f)
        obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=ALPHA, num_classes=K), version=3,
                            eta=0.5, threshold=None, rescale=False)
        assert float(obj(base, x[:1], Y[:1]).loss) == pytest.approx(float(hand), rel=1e-12)


@pytest.mark.parametrize("version", [1, 3])
@pytest.mark.parametrize("clean_pass", ["separate", "fused"])
def test_autocast_keeps_float32_loss_and_bfloat16_logits(version, clean_pass):
    net = make_cnn(batchnorm=True).float()
    x = inputs_for("cnn").float()
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["2"], num_classes=K),
                        version=version, eta=0.5, clean_pass=clean_pass)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = obj(net, x, Y)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in net.parameters())


class FakeGraphBatch:
    def __init__(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> None:
        self.x, self.batch, self.num_graphs = x, batch, num_graphs


class GraphNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.node = nn.Linear(4, 6)
        self.pool = nn.Identity()
        self.head = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, K))

    def forward(self, data: FakeGraphBatch) -> torch.Tensor:
        h = torch.tanh(self.node(data.x))
        pooled = torch.zeros(data.num_graphs, 6, dtype=h.dtype).index_add(0, data.batch, h)
        return self.head(self.pool(pooled))


def test_graph_version1_differentiates_at_the_pooled_embedding():
    net = seeded(GraphNet())
    batch = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4, 4, 5])
    data = FakeGraphBatch(randn(10, 4, seed=3), batch, 6)
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(alpha=ALPHA, layers=["pool"], num_classes=K),
                        version=1, eta=0.5, threshold=None, rescale=False)
    out = obj(net, data, Y, lam=LAM, perm=PERM)
    with torch.no_grad():
        pooled = torch.zeros(6, 6, dtype=torch.float64).index_add(
            0, batch, torch.tanh(net.node(data.x)))
        r = torch.softmax(net.head(pooled), 1) - torch.eye(K, dtype=torch.float64)[Y]
        d = pooled.mean(0) - pooled
        step = 1e-5
        fd = (net.head(pooled + step * d) - net.head(pooled - step * d)) / (2 * step)
    expected = (r * fd).sum(1)
    torch.testing.assert_close(out.scores.detach(), expected, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(obj.layer_means["pool"], pooled.mean(0))
