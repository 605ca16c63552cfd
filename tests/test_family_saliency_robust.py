"""Puzzle Mix and Co-Mixup: bad inputs, memory format, half precision, host copies, the
Dirichlet prior and train-mode saliency."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mixupe
from mixupe import functional as MF
from mixupe.functional import cuts as MC
from mixupe.objectives.co_mixup import sample_dirichlet, sample_gamma
from mixupe.objectives.saliency_guided import input_gradient

pytest.importorskip("maxflow")
pytest.importorskip("ot")
K = 3


def net_for(shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(shape[0], 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * shape[1] * shape[2], K))


def mixers() -> dict[str, mixupe.objectives.Mixer]:
    return {
        "puzzlemix": mixupe.PuzzleMix(num_classes=K, grid_sizes=(2, 4), seed=0,
                                      solver="maxflow"),
        "comixup": mixupe.CoMixup(num_classes=K, grid_sizes=(2, 4), seed=0, solver="maxflow"),
        "mixup": mixupe.Mixup(num_classes=K, seed=0),
        "cutmix": mixupe.CutMix(num_classes=K, seed=0),
        "fmix": mixupe.FMix(num_classes=K, seed=0),
        "resizemix": mixupe.ResizeMix(num_classes=K, seed=0),
        "saliencymix": mixupe.SaliencyMix(num_classes=K, seed=0),
    }


@pytest.mark.parametrize("name", sorted(mixers()))
def test_mixed_inputs_keep_the_channels_last_memory_format(name):
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    mixer = mixers()[name]
    plan = mixer.plan(net_for((3, 8, 8)), x, 6, device=x.device, dtype=torch.float32, lam=None,
                      perm=None, generator=torch.Generator().manual_seed(1),
                      **({"targets": torch.eye(K)[torch.arange(6) % K]}
                         if getattr(mixer, "needs_targets", False) else {}))
    out = plan.mix(x)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("cls", [mixupe.PuzzleMix, mixupe.CoMixup])
def test_uint8_images_get_a_clear_error(cls):
    x = torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8)
    with pytest.raises(mixupe.InputError, match=r"x.float\(\) / 255"):
        cls(num_classes=K, grid_sizes=(2,), solver="maxflow")(net_for((3, 8, 8)), x,
                                                              torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("bad", [3.0, -1.0, float("nan")])
def test_puzzlemix_refuses_a_mask_outside_zero_one(bad):
    x = torch.rand(4, 1, 8, 8)
    mask = torch.full((4, 2, 2), 0.5)
    mask[1, 0, 0] = bad
    pm = mixupe.PuzzleMix(num_classes=K, transport=False, solver="maxflow")
    with pytest.raises(mixupe.InputError, match=r"outside \[0, 1\]"):
        pm(net_for((1, 8, 8)), x, torch.tensor([0, 1, 2, 0]), mask=mask,
           perm=torch.tensor([1, 0, 3, 2]))


def test_comixup_soft_targets_stay_float32_under_autocast():
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    cm = mixupe.CoMixup(num_classes=K, grid_sizes=(2,), seed=0, solver="maxflow")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cm(net_for((1, 8, 8)), x, torch.arange(6) % K)
    assert out.targets.dtype == torch.float32


def test_input_gradient_does_not_underflow_under_float16_autocast():
    """Tiny weights make the per-pixel gradient ~1e-9, below float16's range: it must equal
    the float32 gradient of the summed loss, computed by hand."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, K))
    with torch.no_grad():
        net[1].weight.mul_(1e-7)
    x = torch.rand(8, 3, 4, 4)
    targets = torch.eye(K)[torch.arange(8) % K]
    with torch.autocast("cpu", dtype=torch.float16):
        grad = input_gradient(net, x, targets)
    want = ((torch.softmax(net(x), 1) - targets) @ net[1].weight).reshape(x.shape)
    assert int((grad == 0).sum()) == 0
    torch.testing.assert_close(grad, want.detach(), rtol=1e-5, atol=0)


def test_directional_score_does_not_underflow_under_float16_autocast():
    """Two layers of small (but float16-normal) weights: the input gradient is ~1e-7, in
    float16's subnormal range, where it loses its digits unless scaled."""
    torch.manual_seed(4)
    lin = nn.Sequential(nn.Linear(16, 16, bias=False), nn.Linear(16, K, bias=False))
    with torch.no_grad():
        for layer in lin:
            layer.weight.copy_(torch.where(layer.weight > 0, 1.0, -1.0) * 2.5e-4)
    x = torch.rand(8, 16, requires_grad=True)
    targets = torch.eye(K)[torch.arange(8) % K]
    direction = torch.rand(8, 16)
    want = MF.directional_derivative_score(lin(x), targets, inputs=x, direction=direction)
    with torch.autocast("cpu", dtype=torch.float16):
        got = MF.directional_derivative_score(lin(x), targets, inputs=x, direction=direction)
    assert bool((want != 0).all())
    torch.testing.assert_close(got.float(), want.detach(), rtol=2e-2, atol=0)


def test_puzzlemix_copies_the_energies_to_the_host_once_per_step(monkeypatch):
    calls = []
    real = torch.Tensor.cpu

    def counting(self, *args, **kwargs):
        calls.append(tuple(self.shape))
        return real(self, *args, **kwargs)

    pm = mixupe.PuzzleMix(num_classes=K, grid_sizes=(4,), solver="maxflow")
    b, grid = 8, (4, 4)
    sal = torch.rand(b, *grid)
    x = torch.rand(b, 3, 16, 16)
    monkeypatch.setattr(torch.Tensor, "cpu", counting)
    pm.sample_mask(sal, torch.tensor(0.4), torch.randperm(b), x, grid)
    assert len(calls) <= 2  # one packed energy, one 3 x 3 label cost; not 2 B per step


def test_gamma_and_dirichlet_draws_follow_their_laws():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(5)
    for a in (0.4, 2.0):
        draws = sample_gamma(torch.full((4000,), a), generator=g)
        assert stats.kstest(draws.numpy(), stats.gamma(a).cdf).pvalue > 1e-3
    m, alpha = 5, 2.0
    d = torch.stack([sample_dirichlet(alpha, m, generator=g) for _ in range(3000)])
    torch.testing.assert_close(d.sum(1), torch.ones(3000, dtype=torch.float64))
    var = (1 / m) * (1 - 1 / m) / (m * alpha + 1)
    assert abs(float(d.mean()) - 1 / m) < 1e-3
    assert math.isclose(float(d.var(0).mean()), var, rel_tol=0.1)
    again = sample_dirichlet(alpha, m, generator=torch.Generator().manual_seed(9))
    assert torch.equal(again, sample_dirichlet(alpha, m, generator=torch.Generator()
                                               .manual_seed(9)))


def test_comixup_takes_saliency_in_train_mode_and_puzzlemix_in_eval_mode():
    """Train mode (the release's clean_lam default) moves BatchNorm's running mean; eval mode
    leaves it; both restore the module's mode."""
    x = torch.rand(6, 1, 8, 8) + 3.0
    for cls, moves in ((mixupe.CoMixup, True), (mixupe.PuzzleMix, False)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.Flatten(),
                            nn.Linear(128, K)).eval()
        before = net[1].running_mean.clone()
        plan = cls(num_classes=K, grid_sizes=(2,), solver="maxflow").plan(
            net, x, 6, device=x.device, dtype=torch.float32, lam=None, perm=None,
            generator=torch.Generator().manual_seed(0), targets=torch.eye(K)[torch.arange(6) % K])
        assert plan is not None and not net.training
        assert (not torch.equal(before, net[1].running_mean)) == moves


def test_solver_option_is_checked():
    with pytest.raises(mixupe.ConfigError, match="gco-wrapper"):
        mixupe.CoMixup(solver="nope")
    with pytest.raises(mixupe.ConfigError, match="neigh_size"):
        mixupe.PuzzleMix(neigh_size=0)
    assert MC.SOLVERS == ("gco", "maxflow")
