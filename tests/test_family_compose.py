"""Every mixer of the family runs under MixupE(mixing=...) with the same draws as alone, and
RegMixup's loss against a plain computation."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

import mixupe

pytest.importorskip("maxflow")
pytest.importorskip("ot")

K = 3


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(4 * 8 * 8, K))
    net.mix_layers = ("1",)
    return net


MIXERS: dict[str, Callable[[], mixupe.objectives.Mixer]] = {
    "fmix": lambda: mixupe.FMix(num_classes=K, seed=0),
    "resizemix": lambda: mixupe.ResizeMix(num_classes=K, seed=0),
    "saliencymix": lambda: mixupe.SaliencyMix(num_classes=K, seed=0),
    "puzzlemix": lambda: mixupe.PuzzleMix(num_classes=K, grid_sizes=(2, 4), seed=0),
    "comixup": lambda: mixupe.CoMixup(num_classes=K, grid_sizes=(2, 4), seed=0),
    "alignmix": lambda: mixupe.AlignMix(num_classes=K, seed=0),
    "cutmix-minmax": lambda: mixupe.CutMix(num_classes=K, minmax=(0.2, 0.8), seed=0),
    "mixup-label-alpha": lambda: mixupe.Mixup(num_classes=K, label_alpha=0.5, seed=0),
    "switch": lambda: mixupe.Switch(mixupe.Mixup(num_classes=K, seed=0),
                                    mixupe.CutMix(num_classes=K), switch_prob=0.5),
    "scheduled": lambda: mixupe.Scheduled(mixupe.FMix(num_classes=K, seed=0), prob=0.5),
}


@pytest.mark.parametrize("name", sorted(MIXERS))
def test_mixer_runs_under_mixupe_with_its_own_loss_as_the_mixup_loss(name):
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    net = small_cnn()
    alone = MIXERS[name]()(net, x, y)
    mixer = MIXERS[name]()
    obj = mixupe.MixupE(mixing=mixer, version=3, eta=0.5, rescale=False)
    out = obj(net, x, y)
    # the same draws: MixupE's mixing loss is the mixer's own loss, plus its term
    torch.testing.assert_close(out.stats["mixup_loss"], float(alone.loss.detach()), rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(out.targets, alone.targets)
    assert obj.c == pytest.approx(mixer.mixupe_constant())
    want = alone.loss.detach() + out.stats["regulariser"]
    torch.testing.assert_close(out.loss.detach(), want, rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_regmixup_is_clean_cross_entropy_plus_eta_times_the_mixup_loss():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, K)).double()
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    perm = torch.tensor([6, 0, 1, 2, 3, 4, 5])
    out = mixupe.RegMixup(eta=0.7, num_classes=K)(net, x, y, lam=0.35, perm=perm)
    clean = net(x)
    mixed = net(0.35 * x + 0.65 * x[perm])

    def ce(logits, t):
        return torch.logsumexp(logits, 1) - logits.gather(1, t[:, None])[:, 0]

    want = ce(clean, y).mean() + 0.7 * (0.35 * ce(mixed, y) + 0.65 * ce(mixed, y[perm])).mean()
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.clean_logits, clean)
    with pytest.raises(mixupe.ConfigError, match="eta"):
        mixupe.RegMixup(eta=-1.0)
    with pytest.raises(mixupe.ConfigError, match="mixing objective"):
        mixupe.RegMixup(mixing=mixupe.ERM(num_classes=K))


def test_regmixup_with_a_manifold_mixer_mixes_at_the_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, K)).double()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 0, 3, 2])
    reg = mixupe.RegMixup(eta=1.0, mixing=mixupe.ManifoldMixup(layers=["1"], num_classes=K))
    out = reg(net, x, y, lam=0.5, perm=perm, layer="1")
    h = net[1](net[0](x))
    torch.testing.assert_close(out.logits, net[2](0.5 * h + 0.5 * h[perm]))
