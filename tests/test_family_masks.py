"""FMix, ResizeMix, SaliencyMix, CutMix's minmax boxes, decoupled lambdas and the Switch /
Scheduled wrappers, each against an independent computation (numpy FFTs, counting, loops)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

import mixupe
from mixupe.functional import masks as MM


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flat_net(d: int, k: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double()


def ce_rows(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(logits, 1) - logits.gather(1, y[:, None])[:, 0]


def mixed_loss(net: nn.Module, x_mix: torch.Tensor, y: torch.Tensor, perm: torch.Tensor,
               lam: torch.Tensor) -> torch.Tensor:
    """Plain reference: lam CE(y) + (1 - lam) CE(y[perm]), averaged."""
    logits = net(x_mix)
    return (lam * ce_rows(logits, y) + (1 - lam) * ce_rows(logits, y[perm])).mean()


# ---------------------------------------------------------------------- FMix
@pytest.mark.parametrize("spatial", [(6, 10), (12,)])
def test_fmix_mask_keeps_the_top_of_numpy_low_frequency_noise(spatial):
    lam = torch.tensor([0.3, 0.55, 0.9])
    mask = MM.fmix_mask(spatial, lam, generator=gen(3), decay_power=3.0)
    # the same Gaussian draws, turned into a grey map by numpy's own frequency grid and FFT
    if len(spatial) == 2:
        f = np.sqrt(np.fft.fftfreq(spatial[0])[:, None] ** 2
                    + np.fft.fftfreq(spatial[1])[: spatial[1] // 2 + 1][None, :] ** 2)
    else:
        f = np.abs(np.fft.fftfreq(spatial[0])[: spatial[0] // 2 + 1])
    f = np.abs(f)
    scale = 1.0 / np.maximum(f, 1.0 / max(spatial)) ** 3.0
    noise = torch.randn((3, *f.shape, 2), generator=gen(3), dtype=torch.float64).numpy()
    for b in range(3):
        spec = (noise[b, ..., 0] + 1j * noise[b, ..., 1]) * scale
        grey = np.fft.irfftn(spec, s=spatial, axes=list(range(len(spatial))))
        k = round(float(lam[b]) * grey.size)
        kept = ~mask[b].numpy()
        assert kept.sum() == k  # the kept fraction, counted
        assert grey[kept].min() >= grey[~kept].max()  # kept = the k largest values


def test_fmix_objective_equals_plain_loop_and_reports_the_counted_fraction():
    x = torch.randn(5, 2, 6, 6, generator=gen(1), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    net = flat_net(72)
    for per_sample in (False, True):
        out = mixupe.FMix(num_classes=3, per_sample=per_sample, seed=2)(net, x, y)
        mask = out.mask
        assert mask.dtype == torch.bool and mask.shape[0] == (5 if per_sample else 1)
        counted = torch.tensor([1 - m.sum().item() / m.numel() for m in mask],
                               dtype=torch.float64)
        torch.testing.assert_close(out.lam.double().reshape(-1), counted.float().double(),
                                   atol=1e-7, rtol=0)
        x_mix = x.clone()
        for b in range(5):
            m = mask[b if per_sample else 0]
            for c in range(2):
                x_mix[b, c][m] = x[out.perm[b], c][m]
        lam = out.lam.double().expand(5)
        torch.testing.assert_close(out.loss, mixed_loss(net, x_mix, y, out.perm, lam))


def test_fmix_on_mfcc_sequences_masks_whole_frames():
    x = torch.randn(4, 20, 13, generator=gen(0), dtype=torch.float64)  # (B, L, D)
    perm = torch.tensor([1, 2, 3, 0])
    fmix = mixupe.FMix(num_classes=3, channels_last=True, seed=0)
    plan = fmix.plan(None, x, 4, device=x.device, dtype=torch.float64, lam=0.6, perm=perm,
                     generator=gen(0))
    assert plan.mask.shape == (1, 20)
    mixed = plan.mix(x)
    for t in range(20):  # every frame entirely x's or entirely the partner's
        want = x[perm, t] if plan.mask[0, t] else x[:, t]
        assert torch.equal(mixed[:, t], want)
    assert math.isclose(float(plan.lam), 1 - plan.mask.sum().item() / 20, rel_tol=1e-9)
    assert math.isclose(float(plan.lam), 0.6, rel_tol=1e-9)


@pytest.mark.parametrize("cls", [mixupe.FMix, mixupe.ResizeMix, mixupe.SaliencyMix])
def test_spatial_mixers_refuse_feature_vectors_and_graphs(cls):
    with pytest.raises(mixupe.ConfigError, match="spatial or temporal axis"):
        cls(num_classes=3)(flat_net(6), torch.randn(4, 6), torch.tensor([0, 1, 2, 0]))

    class Graphs:
        num_graphs = 2

    with pytest.raises(mixupe.ConfigError, match="ManifoldMixup"):
        cls(num_classes=3)(flat_net(6), Graphs(), torch.tensor([0, 1]))


def test_fmix_rejects_bad_options_and_masks():
    with pytest.raises(mixupe.ConfigError, match="decay_power"):
        mixupe.FMix(decay_power=0)
    with pytest.raises(mixupe.ConfigError, match="alpha"):
        mixupe.FMix(alpha=0)
    x = torch.randn(3, 1, 4, 4)
    with pytest.raises(mixupe.InputError, match="mask of shape"):
        mixupe.FMix(num_classes=2)(flat_net(16, 2).float(), x, torch.tensor([0, 1, 0]),
                                   mask=torch.zeros(3, 5, 5, dtype=torch.bool))


# ---------------------------------------------------------------------- ResizeMix
def test_resizemix_nearest_paste_matches_a_hand_loop():
    x = torch.randn(3, 2, 10, 8, generator=gen(4), dtype=torch.float64)
    y = torch.tensor([0, 1, 2])
    net = flat_net(160)
    perm = torch.tensor([2, 0, 1])
    out = mixupe.ResizeMix(num_classes=3)(net, x, y, perm=perm, box=((3, 1), (4, 6)))
    want = x.clone()
    for b in range(3):
        for i in range(4):
            for j in range(6):
                # nearest neighbour: source index floor(i * in / out)
                want[b, :, 3 + i, 1 + j] = x[perm[b], :, math.floor(i * 10 / 4),
                                             math.floor(j * 8 / 6)]
    lam = 1 - 24 / 80
    assert math.isclose(float(out.lam), lam, rel_tol=1e-6)
    assert int(out.mask.sum()) == 24
    torch.testing.assert_close(out.loss, mixed_loss(net, want, y, perm,
                                                    torch.full((3,), lam, dtype=torch.float64)))


def test_resizemix_random_boxes_lie_inside_and_lam_is_the_kept_area():
    mix = mixupe.ResizeMix(num_classes=2, seed=0)
    x = torch.randn(2, 1, 12, 12)
    for _ in range(20):
        plan = mix.plan(None, x, 2, device=x.device, dtype=torch.float32, lam=None, perm=None,
                        generator=mix.generator)
        area = int(plan.mask.sum())
        side = math.isqrt(area)
        assert side * side == area and 1 <= side <= round(0.8 * 12)
        assert math.isclose(float(plan.lam), 1 - area / 144, rel_tol=1e-6)


def test_resizemix_mixupe_constant_is_the_closed_form_moment():
    lo, hi = 0.1, 0.8
    taus = np.linspace(lo, hi, 200001)
    lam = 1 - taus**2
    numeric = 2 * np.mean(lam * (1 - lam))
    assert math.isclose(mixupe.ResizeMix().mixupe_constant(), numeric, rel_tol=1e-4)


def test_resizemix_rejects_bad_options():
    with pytest.raises(mixupe.ConfigError, match="scale"):
        mixupe.ResizeMix(scale=(0.9, 0.1))
    with pytest.raises(mixupe.ConfigError, match="mode"):
        mixupe.ResizeMix(mode="cubic")
    with pytest.raises(mixupe.InputError, match="box="):
        mixupe.ResizeMix(num_classes=2)(flat_net(16, 2).float(), torch.randn(2, 1, 4, 4),
                                        torch.tensor([0, 1]), box=((3, 3), (2, 2)))


# ---------------------------------------------------------------------- SaliencyMix
def test_spectral_residual_matches_numpy_scipy_reference():
    x = torch.randn(2, 3, 8, 8, generator=gen(5), dtype=torch.float64)
    lay = MM.layout_of(x, method="test")
    ours = MM.spectral_residual_saliency(x, lay, blur=1 / 8)  # sigma = 1 px
    for b in range(2):
        grey = x[b].mean(0).numpy()
        spec = np.fft.fft2(grey)
        log_amp = np.log(np.abs(spec))
        residual = log_amp - ndimage.uniform_filter(log_amp, size=3, mode="nearest")
        sal = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spec)))) ** 2
        ref = ndimage.gaussian_filter(sal, sigma=1.0, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(ours[b].numpy(), ref, rtol=1e-10, atol=1e-12)


def test_saliencymix_box_is_centred_on_the_peak_and_lam_counts_the_kept_area():
    x = torch.randn(4, 1, 9, 9, generator=gen(6), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 2, 3, 0])
    net = flat_net(81)
    out = mixupe.SaliencyMix(num_classes=3, per_sample=True, saliency="spectral_residual")(
        net, x, y, lam=torch.tensor([0.5, 0.7, 0.9, 0.3], dtype=torch.float64), perm=perm)
    sal = MM.spectral_residual_saliency(x[perm], MM.layout_of(x, method="t"))
    want = x.clone()
    for b, lam in enumerate([0.5, 0.7, 0.9, 0.3]):
        peak = int(sal[b].argmax())
        cy, cx = divmod(peak, 9)
        cut = math.floor(math.sqrt(1 - lam) * 9)
        y0, x0 = max(cy - cut // 2, 0), max(cx - cut // 2, 0)
        y1, x1 = min(cy + cut // 2, 9), min(cx + cut // 2, 9)  # side 2 (cut // 2), released
        box = torch.zeros(9, 9, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        assert torch.equal(out.mask[b], box)
        assert math.isclose(float(out.lam[b]), 1 - box.sum().item() / 81, rel_tol=1e-9)
        want[b, :, y0:y1, x0:x1] = x[perm[b], :, y0:y1, x0:x1]
    torch.testing.assert_close(out.loss, mixed_loss(net, want, y, perm, out.lam))


def test_saliencymix_released_mode_uses_one_box_from_the_first_source():
    x = torch.randn(3, 1, 8, 8, generator=gen(7))
    out = mixupe.SaliencyMix(num_classes=2, seed=1, saliency="spectral_residual")(
        flat_net(64, 2).float(), x, torch.tensor([0, 1, 0]))
    assert out.mask.shape == (1, 8, 8) and out.lam.dim() == 0
    sal = MM.spectral_residual_saliency(x[out.perm[:1]], MM.layout_of(x, method="t"))
    peak = divmod(int(sal[0].argmax()), 8)
    assert bool(out.mask[0][peak]) or float(out.lam) == 1.0


def test_saliencymix_works_on_1d_signals():
    x = torch.zeros(2, 1, 32)
    x[1, 0, 20] = 5.0  # a spike: the saliency peak of sample 1
    out = mixupe.SaliencyMix(num_classes=2)(flat_net(32, 2).float(), x, torch.tensor([0, 1]),
                                            lam=0.75, perm=torch.tensor([1, 0]))
    idx = out.mask[0].nonzero().flatten().tolist()
    assert idx == list(range(16, 24))  # 8 = floor(0.25 * 32) samples centred on 20


# ---------------------------------------------------------------------- timm's knobs
def test_cutmix_minmax_sizes_and_the_counted_kept_area():
    cut = mixupe.CutMix(num_classes=2, minmax=(0.25, 0.75), per_sample=True, seed=0)
    x = torch.randn(64, 1, 8, 12)
    out = cut(flat_net(96, 2).float(), x, torch.arange(64) % 2)
    for b in range(64):
        rows = out.mask[b].any(1).sum().item()
        cols = out.mask[b].any(0).sum().item()
        assert 2 <= rows < 6 and 3 <= cols < 9
        assert rows * cols == out.mask[b].sum().item()  # one rectangle, fully inside
        assert math.isclose(float(out.lam[b]), 1 - rows * cols / 96, rel_tol=1e-6)
    with pytest.raises(mixupe.ConfigError, match="minmax"):
        mixupe.CutMix(minmax=(0.5, 0.2))


def test_decoupled_label_lambda_mixes_inputs_and_targets_separately():
    x = torch.randn(4, 3, generator=gen(8), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    perm = torch.tensor([3, 2, 1, 0])
    net = nn.Linear(3, 3).double()
    out = mixupe.Mixup(num_classes=3, label_alpha=1.0)(net, x, y, lam=0.3, perm=perm,
                                                      label_lam=0.8)
    x_mix = 0.3 * x + 0.7 * x[perm]
    torch.testing.assert_close(out.logits, net(x_mix))
    torch.testing.assert_close(out.loss, mixed_loss(net, x_mix, y, perm,
                                                    torch.full((4,), 0.8, dtype=torch.float64)))
    # drawn: a second, independent draw (the input lambda is read back from the mixed batch)
    mix = mixupe.Mixup(num_classes=3, label_alpha=0.5, seed=0)
    plan = mix.plan(None, x, 4, device=x.device, dtype=torch.float64, lam=None, perm=perm,
                    generator=gen(1))
    lam_x = ((plan.mix(x) - x[perm]) / (x - x[perm]))[0, 0]
    first_draw = mixupe.functional.sample_lambda(1.0, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(lam_x, first_draw)
    assert plan.lam.dim() == 0 and abs(float(plan.lam) - float(lam_x)) > 1e-6


def test_switch_picks_the_second_mixer_with_switch_prob():
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    net = flat_net(16, 2).float()
    never = mixupe.Switch(mixupe.Mixup(num_classes=2, seed=0), mixupe.CutMix(num_classes=2),
                          switch_prob=0.0)
    always = mixupe.Switch(mixupe.Mixup(num_classes=2, seed=0), mixupe.CutMix(num_classes=2),
                           switch_prob=1.0)
    assert all(never(net, x, y).mask is None for _ in range(5))
    assert all(always(net, x, y).mask is not None for _ in range(5))
    half = mixupe.Switch(mixupe.Mixup(num_classes=2, seed=0), mixupe.CutMix(num_classes=2),
                         switch_prob=0.3)
    hits = sum(half(net, x, y).mask is not None for _ in range(400))
    assert abs(hits / 400 - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 400)
    c = 0.7 * mixupe.Mixup(alpha=1.0).mixupe_constant() + 0.3 * mixupe.ResizeMix(
    ).mixupe_constant()
    sw = mixupe.Switch(mixupe.Mixup(alpha=1.0), mixupe.ResizeMix(), switch_prob=0.3)
    assert math.isclose(sw.mixupe_constant(), c)
    with pytest.raises(mixupe.ConfigError, match="share num_classes"):
        mixupe.Switch(mixupe.Mixup(num_classes=2), mixupe.CutMix(num_classes=3))
    with pytest.raises(mixupe.ConfigError, match="switch_prob"):
        mixupe.Switch(mixupe.Mixup(), mixupe.CutMix(), switch_prob=1.5)


def test_scheduled_prob_and_off_epoch():
    x, y = torch.randn(6, 3, generator=gen(9), dtype=torch.float64), torch.arange(6) % 3
    net = nn.Linear(3, 3).double()
    plain = torch.nn.functional.cross_entropy(net(x), y)
    off = mixupe.Scheduled(mixupe.Mixup(num_classes=3, seed=0), prob=0.0)
    torch.testing.assert_close(off(net, x, y).loss, plain)
    late = mixupe.Scheduled(mixupe.Mixup(num_classes=3, seed=0), off_epoch=4)
    late.set_epoch(3)
    assert float(late(net, x, y).lam) != 1.0
    late.set_epoch(4)
    out = late(net, x, y)
    assert float(out.lam) == 1.0 and torch.equal(out.perm, torch.arange(6))
    torch.testing.assert_close(out.loss, plain)
    some = mixupe.Scheduled(mixupe.Mixup(num_classes=3, seed=0), prob=0.25)
    mixed = sum(not torch.equal(some(net, x, y).perm, torch.arange(6)) or False
                for _ in range(400))
    # a drawn permutation can be the identity (1/720), so this counts at most the mixed steps
    assert abs(mixed / 400 - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 400)
    with pytest.raises(mixupe.ConfigError, match="off_epoch"):
        mixupe.Scheduled(mixupe.Mixup(), off_epoch=0)
    with pytest.raises(mixupe.ConfigError, match="prob"):
        mixupe.Scheduled(mixupe.Mixup(), prob=-0.1)


@pytest.mark.parametrize("cls", [mixupe.FMix, mixupe.ResizeMix, mixupe.SaliencyMix])
def test_mask_mixers_refuse_mix_keys_and_dict_batches_naming_the_mixers_that_take_them(cls):
    """Issue 23.11: FMix(mix_keys=...) raised a bare TypeError, and a dict batch was called
    "a graph batch"."""
    with pytest.raises(mixupe.ConfigError, match=r"mix_keys=.*not an option.*Mixup\(mix_keys"):
        cls(mix_keys=["pixel_values"], num_classes=3)
    net = lambda batch: batch["pixel_values"].flatten(1)[:, :3]  # noqa: E731
    batch = {"pixel_values": torch.randn(4, 1, 8, 8), "mask": torch.ones(4, 8)}
    with pytest.raises(mixupe.ConfigError, match=r"one input tensor, got a dict batch.*"
                                                  r"CutMix\(mix_keys") as err:
        cls(num_classes=3, seed=0)(net, batch, torch.tensor([0, 1, 2, 0]))
    assert "graph" not in str(err.value)
    copy.deepcopy(cls(num_classes=3, seed=0))  # copies (no keywords to __new__) still work
