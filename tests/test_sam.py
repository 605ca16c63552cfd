"""SAM's perturbation and step against hand computations on a quadratic loss."""

from __future__ import annotations

import pytest
import torch

import mixupe


def quadratic():
    a = torch.tensor([[3.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))

    def loss():
        return 0.5 * w @ a @ w

    return a, w, loss


@pytest.mark.parametrize("adaptive", [False, True])
def test_sam_step_equals_the_hand_formula(adaptive):
    a, w, loss = quadratic()
    w0 = w.detach().clone()
    rho, lr = 0.1, 0.05
    opt = mixupe.SAM(torch.optim.SGD([w], lr=lr), rho=rho, adaptive=adaptive)

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    value = opt.step(closure)
    g = a @ w0
    if adaptive:
        e = rho * w0**2 * g / torch.linalg.vector_norm(w0.abs() * g)
    else:
        e = rho * g / torch.linalg.vector_norm(g)
    want = w0 - lr * (a @ (w0 + e))
    torch.testing.assert_close(w.detach(), want)
    torch.testing.assert_close(value.detach(), 0.5 * w0 @ a @ w0)


def test_sam_uses_existing_gradients_and_shares_the_learning_rate():
    _a, w, loss = quadratic()
    base = torch.optim.SGD([w], lr=0.1)
    opt = mixupe.SAM(base, rho=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    assert base.param_groups[0]["lr"] == pytest.approx(0.05)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss().backward()

    opt.zero_grad()
    loss().backward()
    opt.step(closure)
    sched.step()
    assert len(calls) == 1  # only the perturbed evaluation
    opt.load_state_dict(opt.state_dict())


def test_sam_rejects_bad_use():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(mixupe.ConfigError, match="rho"):
        mixupe.SAM(torch.optim.SGD([w], lr=0.1), rho=0)
    with pytest.raises(mixupe.ConfigError, match="optimiser instance"):
        mixupe.SAM(torch.optim.SGD, rho=0.05)
    with pytest.raises(mixupe.ConfigError, match="closure"):
        mixupe.SAM(torch.optim.SGD([w], lr=0.1)).step()
