"""Fidelity of SaliencyMix, AlignMix, FMix, ResizeMix and CutMix's minmax boxes to the authors'
released code: golden outputs of that code (tests/golden/, see its README), OpenCV as a
reference where installed, and closed forms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mixupe
from mixupe import functional_masks as MM

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
    plan = mixupe.functional_transport.alignment_plan(h, h[perm])
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
