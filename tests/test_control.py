"""The study's control arm ``L_mix + beta * CE(clean)``: a hand computation, and its gradient
equals MixupE version 4's (released sign, no rescale), which is the claim it controls for."""

from __future__ import annotations

import pytest
import torch

import mixupe
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.BatchNorm1d(16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 4)).double()


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.randn(12, 5, generator=g, dtype=torch.float64), torch.arange(12) % 4


def test_loss_is_the_mixed_cross_entropy_plus_beta_times_the_clean_one():
    net, (x, y) = _net(), _batch()
    lam, perm = 0.3, torch.randperm(12, generator=torch.Generator().manual_seed(2))
    ctl = mixupe.MixupCleanCE(eta=0.5, mixing=mixupe.Mixup(alpha=2.0, num_classes=4))
    assert ctl.beta == pytest.approx(0.5 * 2.0 / 5.0)  # eta * alpha / (2 alpha + 1)
    out = ctl(net, x, y, lam=lam, perm=perm)
    # by hand, one sample at a time, on copies of the model in the same (training) state
    ref_net = _net()
    logits_mix = ref_net(lam * x + (1 - lam) * x[perm])
    logits_clean = ref_net(x)
    mix_terms, clean_terms = [], []
    for i in range(12):
        logp = torch.log_softmax(logits_mix[i], 0)
        mix_terms.append(-(lam * logp[y[i]] + (1 - lam) * logp[y[perm[i]]]))
        clean_terms.append(-torch.log_softmax(logits_clean[i], 0)[y[i]])
    l_mix, ce = torch.stack(mix_terms).mean(), torch.stack(clean_terms).mean()
    assert out.loss.item() == pytest.approx((l_mix + 0.2 * ce).item(), rel=1e-12)
    assert out.stats["clean_loss"] == pytest.approx(ce.item(), rel=1e-12)
    assert out.stats["regulariser"] == pytest.approx(0.2 * ce.item(), rel=1e-12)
    assert out.stats["mixup_loss"] == pytest.approx(l_mix.item(), rel=1e-12)


@pytest.mark.parametrize("eta", [0.01, 1.0])
def test_gradient_equals_mixupe_v4_released_sign_without_rescale(eta):
    x, y = _batch()
    lam, perm = 0.7, torch.randperm(12, generator=torch.Generator().manual_seed(3))
    grads = []
    for objective in (
        mixupe.MixupCleanCE(eta=eta, mixing=mixupe.Mixup(alpha=1.0, num_classes=4)),
        mixupe.MixupE(version=4, eta=eta, fast_sign=-1, rescale=False,
                      mixing=mixupe.Mixup(alpha=1.0, num_classes=4)),
    ):
        net = _net()
        objective(net, x, y, lam=lam, perm=perm).loss.backward()
        grads.append([p.grad.clone() for p in net.parameters()])
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-13)
    # ... and not MixupE's with the theory sign (the control is not trivially equal to all)
    net = _net()
    mixupe.MixupE(version=4, eta=eta, fast_sign=1, rescale=False,
                  mixing=mixupe.Mixup(alpha=1.0, num_classes=4))(net, x, y, lam=lam,
                                                                  perm=perm).loss.backward()
    assert not torch.allclose(next(net.parameters()).grad, grads[0][0])


def test_errors_and_config_wiring():
    with pytest.raises(ConfigError, match=r"exactly one of beta .* and eta"):
        mixupe.MixupCleanCE(beta=0.1, eta=0.1)
    with pytest.raises(ConfigError, match=r"beta=-1 is invalid"):
        mixupe.MixupCleanCE(beta=-1)
    with pytest.raises(ConfigError, match=r"is not a mixing objective"):
        mixupe.MixupCleanCE(eta=0.1, mixing=mixupe.ERM(num_classes=3))
    cfg = TrainConfig(method="mixup-ce", alpha=0.2, eta=0.1, version=1, rescale=False)
    assert cfg.normalized() == TrainConfig(method="mixup-ce", alpha=0.2, eta=0.1).normalized()
    assert "mixup-ce-a0.2-eta0.1" in cfg.run_name()
