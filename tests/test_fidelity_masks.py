"""Fidelity of SaliencyMix, AlignMix, FMix, ResizeMix and CutMix's minmax boxes to the authors'
released code: golden outputs of that code (tests/golden/, see its README), OpenCV as a
reference where installed, and closed forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mixupe
from mixupe.functional import masks as MM

GOLDEN = Path(__file__).parent / "golden"
CPU = torch.device("cpu")


def golden(name: str) -> dict[str, np.ndarray]:
    with np.load(GOLDEN / name) as data:
        return {k: data[k] for k in data.files}


def box_of(mask: torch.Tensor) -> list[int]:
    """``[row0, col0, row1, col1]`` of a rectangular mask (the authors' bbx1, bby1, bbx2, bby2)."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    assert int(mask.sum()) == len(rows) * len(cols)  # one rectangle
    return [int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1]


# ---------------------------------------------------------------------- SaliencyMix
def test_fine_grained_saliency_equals_the_authors_opencv_maps():
    g = golden("saliencymix_fine_grained.npz")
    x = torch.from_numpy(g["images"])
    ours = MM.fine_grained_saliency(x, MM.layout_of(x, method="t"))
    np.testing.assert_array_equal(ours.numpy(), g["saliency"].astype(np.int64))


@pytest.mark.parametrize("as_float", [False, True])
def test_saliencymix_boxes_equal_the_authors_boxes(as_float):
    """The released saliency_bbox's boxes, for uint8 images and for the same images in [0, 1]."""
    g = golden("saliencymix_fine_grained.npz")
    x = torch.from_numpy(g["images"])
    if as_float:
        x = x.float() / 255
    n = x.shape[0]
    for i, lam in enumerate(g["lam"].tolist()):
        perm = torch.tensor([i] + [j for j in range(n) if j != i])  # the box follows x[perm[0]]
        plan = mixupe.SaliencyMix(num_classes=2).plan(
            None, x, n, device=CPU, dtype=torch.float64, lam=lam, perm=perm,
            generator=torch.Generator())
        assert box_of(plan.mask[0]) == g["boxes"][i].tolist()
        r0, c0, r1, c1 = g["boxes"][i].tolist()
        assert float(plan.lam) == pytest.approx(1 - (r1 - r0) * (c1 - c0) / 1024, abs=1e-12)


def _opencv():
    return pytest.importorskip(
        "cv2", reason="OpenCV reference absent: pip install opencv-contrib-python-headless")


@pytest.mark.parametrize("shape", [(32, 32, 3), (24, 40, 3), (17, 9, 1), (1, 50, 1)])
def test_fine_grained_saliency_equals_opencv_on_random_images(shape):
    cv2 = _opencv()
    if not hasattr(cv2, "saliency"):
        pytest.skip("OpenCV without contrib: pip install opencv-contrib-python-headless")
    rng = np.random.default_rng(sum(shape))
    detector = cv2.saliency.StaticSaliencyFineGrained_create()
    for trial in range(4):
        img = rng.integers(0, 256, shape, dtype=np.uint8)
        if trial % 2:
            img = (img // 64 * 64).astype(np.uint8)  # flat regions, ties in the peak
        _, ref = detector.computeSaliency(img if shape[2] == 3 else img[..., 0])
        x = torch.from_numpy(img.transpose(2, 0, 1).copy())[None]
        if shape[0] == 1:  # a 1-D signal (B, C, L)
            x = x[:, :, 0]
        ours = MM.fine_grained_saliency(x, MM.layout_of(x, method="t")).reshape(ref.shape)
        np.testing.assert_array_equal(ours.numpy(), np.round(ref * 255).astype(np.int64))


def test_saliencymix_refuses_an_unknown_saliency():
    with pytest.raises(mixupe.ConfigError, match="saliency="):
        mixupe.SaliencyMix(saliency="itti")


# ---------------------------------------------------------------------- AlignMix
def test_alignmix_plan_and_both_aligned_maps_equal_the_authors():
    """shashankvkt/AlignMixup_CVPR22's SinkhornDistance (eps 0.1, raw squared distances) and
    mixup_aligned's two branches, on fixed post-ReLU maps."""
    g = golden("alignmix_sinkhorn.npz")
    h = torch.from_numpy(g["features"])
    perm = torch.from_numpy(g["perm"])
    lam = torch.tensor(float(g["lam"]))
    plan = mixupe.functional.transport.alignment_plan(h, h[perm])
    torch.testing.assert_close(plan, torch.from_numpy(g["plan"]), atol=2e-4, rtol=0)
    am = mixupe.AlignMix(layers=["x"], num_classes=2)
    for side, key in (("partner", "mixed_partner_aligned"), ("sample", "mixed_sample_aligned")):
        ours = am.mix_representation(h, perm, lam, "x", side=side)
        torch.testing.assert_close(ours, torch.from_numpy(g[key]), atol=2e-4, rtol=0)


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Flatten(), torch.nn.Linear(24, 2)).double()


def test_alignmix_draws_which_side_is_aligned():
    net = _conv_net()
    x = torch.randn(4, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 0, 1])
    perm = torch.tensor([1, 2, 3, 0])
    h = net[1](net[0](x)).detach()
    am = mixupe.AlignMix(layers=["1"], num_classes=2)
    want = {s: am.mix_representation(h, perm, torch.tensor(0.3, dtype=torch.float64), "1",
                                     side=s) for s in ("partner", "sample")}
    assert not torch.allclose(want["partner"], want["sample"])
    seen = set()
    for seed in range(12):
        out = mixupe.AlignMix(layers=["1"], num_classes=2, seed=seed)(net, x, y, lam=0.3,
                                                                      perm=perm)
        for side, mixed in want.items():
            if torch.allclose(out.logits, net[3](net[2](mixed)), atol=1e-9, rtol=0):
                seen.add(side)
    assert seen == {"partner", "sample"}
    with pytest.raises(mixupe.ConfigError, match="side="):
        am(net, x, y, side="left")


def test_alignmix_does_plain_mixup_at_the_input():
    net = _conv_net()
    x = torch.randn(4, 2, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 0, 1])
    perm = torch.tensor([2, 3, 0, 1])
    out = mixupe.AlignMix(layers=["input", "1"], num_classes=2)(net, x, y, lam=0.25, perm=perm,
                                                               layer="input")
    torch.testing.assert_close(out.logits, net(0.25 * x + 0.75 * x[perm]))


# ---------------------------------------------------------------------- MixupE's constant
def _monte_carlo_c(lams: list[float]) -> tuple[float, float]:
    v = np.array([2 * lam * (1 - lam) for lam in lams])
    return float(v.mean()), float(v.std() / np.sqrt(len(v)))


def test_resizemix_constant_follows_the_spatial_rank_of_the_batch():
    """1-D sequences (the README's MFCC use) give lam = 1 - tau, not 1 - tau^2."""
    lo, hi = 0.1, 0.8
    tau = np.linspace(lo, hi, 200001)  # E over U(lo, hi) by quadrature, independent of ours
    exact = {d: float(np.mean(2 * tau**d * (1 - tau**d))) for d in (1, 2)}
    seq = mixupe.ResizeMix(num_classes=2, channels_last=True)
    assert seq.mixupe_constant() == pytest.approx(exact[1], rel=1e-5)
    mixe = mixupe.MixupE(mixing=mixupe.ResizeMix(num_classes=2, seed=0))
    assert mixe.c == pytest.approx(exact[2], rel=1e-5)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 2))
    lams = []
    for _ in range(300):  # (B, C, L) signals: 1-D, inferred from the batch
        out = mixe(net, torch.randn(4, 1, 40), torch.tensor([0, 1, 0, 1]))
        lams.append(float(out.lam))
    assert mixe.c == pytest.approx(exact[1], rel=1e-5)
    mean, se = _monte_carlo_c(lams)
    assert abs(mean - exact[1]) < 4 * se + 0.01  # the lams drawn are 1-D ones (c 0.41, not 0.30)


def test_cutmix_minmax_constant_is_the_moment_of_its_own_lambda():
    minmax = (0.2, 0.8)
    want = 0.0  # exact enumeration of the equally likely integer sides on 32 x 32
    sides = range(int(0.2 * 32), int(0.8 * 32))
    for h in sides:
        for w in sides:
            lam = 1 - h * w / 1024
            want += 2 * lam * (1 - lam) / len(sides) ** 2
    cut = mixupe.CutMix(num_classes=2, minmax=minmax, alpha=0.2, seed=0)
    mixe = mixupe.MixupE(mixing=cut)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(1024, 2))
    lams = [float(mixe(net, torch.randn(2, 1, 32, 32), torch.tensor([0, 1])).lam)
            for _ in range(400)]
    assert mixe.c == pytest.approx(want, rel=1e-12)
    assert mixe.c != pytest.approx(0.2 / 1.4, abs=0.05)  # not Beta(0.2)'s alpha / (2 alpha + 1)
    mean, se = _monte_carlo_c(lams)
    assert abs(mean - want) < 4 * se


def test_cutmix_minmax_honours_a_given_lam():
    x = torch.randn(3, 1, 10, 10)
    perm = torch.tensor([2, 0, 1])
    kwargs = dict(device=CPU, dtype=torch.float32, lam=0.64, perm=perm)
    ours = mixupe.CutMix(num_classes=2, minmax=(0.3, 0.5)).plan(
        None, x, 3, generator=torch.Generator().manual_seed(4), **kwargs)
    plain = mixupe.CutMix(num_classes=2).plan(None, x, 3,
                                              generator=torch.Generator().manual_seed(4), **kwargs)
    assert torch.equal(ours.mask, plain.mask)  # the box of lam, as CutMix draws it
    assert float(ours.lam) == pytest.approx(1 - float(ours.mask.float().mean()))


# ---------------------------------------------------------------------- caller masks and lam
@pytest.mark.parametrize("value", [2.0, -1.0, float("nan")])
def test_fmix_refuses_mask_weights_outside_0_1(value):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(mixupe.InputError, match=r"outside \[0, 1\]"):
        mixupe.FMix(num_classes=2)(net, torch.randn(2, 1, 4, 4), torch.tensor([0, 1]),
                                   mask=torch.full((1, 4, 4), value))


def test_fmix_refuses_a_fractional_mask_on_uint8_images_but_blends_floats():
    x = torch.randint(0, 255, (2, 1, 4, 4), dtype=torch.uint8)
    plan = mixupe.FMix(num_classes=2)
    kwargs = dict(device=CPU, dtype=torch.float32, lam=None, perm=torch.tensor([1, 0]),
                  generator=torch.Generator())
    with pytest.raises(mixupe.InputError, match="fractional mask"):
        plan.plan(None, x, 2, mask=torch.full((1, 4, 4), 0.5), **kwargs)
    ok = plan.plan(None, x, 2, mask=torch.ones(1, 4, 4), **kwargs)  # 0/1 floats are fine
    assert torch.equal(ok.mix(x), x[[1, 0]])
    xf = x.float()
    half = plan.plan(None, xf, 2, mask=torch.full((1, 4, 4), 0.5), **kwargs)
    torch.testing.assert_close(half.mix(xf), (xf + xf[[1, 0]]) / 2)


@pytest.mark.parametrize("lam", [-3.0, 1.5, float("nan"), torch.tensor(-0.5)])
def test_resizemix_refuses_lam_outside_0_1(lam):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2))
    with pytest.raises(mixupe.ConfigError, match=r"\[0, 1\]"):
        mixupe.ResizeMix(num_classes=2)(net, torch.randn(2, 1, 8, 8), torch.tensor([0, 1]),
                                        lam=lam)


def test_switch_with_an_option_only_one_mixer_takes_is_the_same_whatever_the_coin():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    x, y = torch.randn(2, 1, 4, 4), torch.tensor([0, 1])
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    for seed in range(8):  # both coin outcomes occur among these seeds at p = 0.5
        sw = mixupe.Switch(mixupe.Mixup(num_classes=2, seed=seed), mixupe.FMix(num_classes=2))
        with pytest.raises(mixupe.ConfigError, match="use_second=True"):
            sw(net, x, y, mask=mask)
        out = sw(net, x, y, mask=mask, use_second=True)
        assert torch.equal(out.mask, mask)


@pytest.mark.parametrize("make", [
    lambda: mixupe.FMix(num_classes=2, seed=0),
    lambda: mixupe.ResizeMix(num_classes=2, seed=0),
    lambda: mixupe.SaliencyMix(num_classes=2, seed=0),
    lambda: mixupe.Switch(mixupe.Mixup(num_classes=2, seed=0), mixupe.CutMix(num_classes=2)),
    lambda: mixupe.Scheduled(mixupe.FMix(num_classes=2, seed=0), prob=0.5),
])
def test_mixcollate_takes_the_model_free_mixers(make):
    from torch.utils.data import DataLoader, TensorDataset

    data = TensorDataset(torch.rand(8, 3, 8, 8), torch.arange(8) % 2)
    loader = DataLoader(data, batch_size=4, collate_fn=mixupe.MixCollate(make()))
    for x, targets in loader:
        assert x.shape == (4, 3, 8, 8) and targets.shape == (4, 2)
        torch.testing.assert_close(targets.sum(1), torch.ones(4))


def test_mixcollate_still_refuses_a_switch_over_a_model_mixer():
    sw = mixupe.Switch(mixupe.Mixup(num_classes=2), mixupe.ManifoldMixup(num_classes=2,
                                                                          layers=["0"]))
    with pytest.raises(mixupe.ConfigError, match="model-free"):
        mixupe.MixCollate(sw)


# ---------------------------------------------------------------------- no host-built tensors
@pytest.mark.parametrize("make", [
    lambda: mixupe.SaliencyMix(num_classes=2, validate=False),
    lambda: mixupe.SaliencyMix(num_classes=2, per_sample=True, validate=False),
    lambda: mixupe.SaliencyMix(num_classes=2, saliency="spectral_residual", validate=False),
    lambda: mixupe.ResizeMix(num_classes=2, validate=False),
    lambda: mixupe.CutMix(num_classes=2, minmax=(0.2, 0.6), validate=False),
])
def test_box_mixers_build_no_tensor_from_host_data(make, monkeypatch):
    """``torch.tensor(data, device=cuda)`` is a blocking pageable copy per step (issue 25)."""
    def refuse(*args, **kwargs):
        raise AssertionError("torch.tensor(host data) in the mixing step")

    mixer = make()
    x = torch.randn(4, 3, 12, 12)
    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    plan = mixer.plan(None, x, 4, device=CPU, dtype=torch.float32, lam=None, perm=None,
                      generator=mixer.generator)
    assert plan.mix(x).shape == x.shape
