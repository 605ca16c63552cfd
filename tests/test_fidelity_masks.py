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
