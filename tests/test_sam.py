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


# ----------------------------------------------------------------- stale gradients, same draws
def _dropout_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                               torch.nn.Linear(16, 3))


def _hand_sam_step(net, x, y, *, lam, perm, rng, rho, lr):
    """One SAM step written out: the gradient at w and at w + e with the given lambda,
    pairing and dropout (the global RNG set to ``rng`` before each pass)."""
    mix = mixupe.Mixup(alpha=1.0, num_classes=3)
    params = list(net.parameters())
    torch.set_rng_state(rng)
    g = torch.autograd.grad(mix(net, x, y, lam=lam, perm=perm).loss, params)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in g]))
    with torch.no_grad():
        w0 = [p.clone() for p in params]
        for p, t in zip(params, g, strict=True):
            p.add_(rho * t / norm)
    torch.set_rng_state(rng)
    g2 = torch.autograd.grad(mix(net, x, y, lam=lam, perm=perm).loss, params)
    with torch.no_grad():
        for p, w, t in zip(params, w0, g2, strict=True):
            p.copy_(w - lr * t)


@pytest.mark.parametrize("prior", ["none", "zeroed", "stale"])
def test_step_with_a_closure_ignores_old_gradients_and_repeats_the_draws(prior):
    """SAM.step(closure) equals the hand step whatever .grad holds: nothing (None), zeros
    from zero_grad(set_to_none=False), or the previous step's gradients."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(8, 4, generator=g), torch.arange(8) % 3
    net, ref = _dropout_net(), _dropout_net()
    objective = mixupe.Mixup(alpha=1.0, num_classes=3, seed=7)
    opt = mixupe.SAM(torch.optim.SGD(net.parameters(), lr=0.1), rho=0.05,
                     generators=[objective.generator])
    outs = []

    def closure():
        out = objective(net, x, y)
        outs.append(out)
        out.loss.backward()
        return out.loss

    if prior == "zeroed":
        net(x).sum().backward()
        opt.zero_grad(set_to_none=False)
    elif prior == "stale":
        net(x).sum().backward()  # gradients of another loss, from "the previous step"
        opt._fresh.clear()  # as after a finished step
    torch.manual_seed(11)
    rng = torch.get_rng_state()
    opt.step(closure)
    assert len(outs) == 2  # evaluated at w and at w + e
    assert torch.equal(outs[0].lam, outs[1].lam) and torch.equal(outs[0].perm, outs[1].perm)
    _hand_sam_step(ref, x, y, lam=outs[0].lam, perm=outs[0].perm, rng=rng, rho=0.05, lr=0.1)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    plain = _dropout_net()  # the step moved the weights
    with torch.no_grad():
        assert not torch.allclose(next(plain.parameters()), next(net.parameters()))


def test_step_restores_the_cuda_generators_of_the_parameters(monkeypatch):
    """The device RNG (CUDA dropout) is restored before the second pass; shown with the CUDA
    RNG calls mocked, since this machine has no GPU."""
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = mixupe.SAM(torch.optim.SGD([w], lr=0.1), rho=0.05)
    calls = []
    monkeypatch.setattr(mixupe.SAM, "_devices", lambda self: [torch.device("cuda", 0)])
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: calls.append(("get", d)) or
                        torch.tensor([42], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state",
                        lambda state, d: calls.append(("set", d, int(state[0]))))

    def closure():
        calls.append(("closure",))
        loss = (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    dev = torch.device("cuda", 0)
    assert calls == [("get", dev), ("closure",), ("set", dev, 42), ("closure",)]


def test_engine_closure_restores_the_device_rng(monkeypatch):
    from mixupe.engine import trainer as T

    class Parts:
        mix_generator = torch.Generator().manual_seed(3)

    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda d: torch.tensor([9], dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, d: restored.append((int(s[0]), d)))
    dev = torch.device("cuda", 0)
    draws = T._draw_states(Parts, dev)
    assert draws[2] is not None and T._draw_states(Parts, torch.device("cpu"))[2] is None

    class Step(torch.nn.Module):
        def forward(self, x, y):
            return (x * 0).sum().requires_grad_()

    Parts.optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    Parts.step_module = Step()
    T._same_draws_closure(Parts, torch.zeros(1), torch.zeros(1), draws, dev)()
    assert restored == [(9, dev)]
