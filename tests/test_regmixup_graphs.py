"""RegMixup on graph batches: two forward passes (issue 23.11: it used to refuse them with
"needs tensor inputs, got Batch", naming no fix)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import mixupe
import mixupe.data as D
import mixupe.models

pytest.importorskip("torch_geometric")
sys.path.insert(0, str(Path(__file__).parent))
from test_data_tu import write_tu


def test_regmixup_on_a_graph_batch_is_ce_plus_eta_manifold_mixup(tmp_path):
    write_tu(tmp_path)
    ds = D.load("tu-folder", root=tmp_path, val_fraction=0.2, test_fraction=0.2)
    torch.manual_seed(0)
    model = mixupe.models.build("gin", input_shape=ds.input_shape, num_classes=2, hidden=8,
                                num_layers=2).eval()
    x, y = next(D.batches(ds.train, batch_size=8, shuffle=False))
    perm = torch.roll(torch.arange(len(y)), 1)
    mixer = mixupe.ManifoldMixup(alpha=1.0, layers=["pool"], num_classes=2, seed=0)
    out = mixupe.RegMixup(mixing=mixer, eta=0.7)(model, x, y, lam=0.3, perm=perm)
    reference_mix = mixupe.ManifoldMixup(alpha=1.0, layers=["pool"], num_classes=2, seed=0)(
        model, x, y, lam=0.3, perm=perm).loss
    expected = F.cross_entropy(model(x), y) + 0.7 * reference_mix
    assert torch.allclose(out.loss, expected, atol=1e-6)
    out.loss.backward()


@pytest.mark.parametrize("minmax", [0.5, "0.2,0.8", (0.2,), (0.1, 0.2, 0.3)])
def test_cutmix_minmax_that_is_not_a_pair_names_the_form(minmax):
    # Issue 23.11: CutMix(minmax=0.5) used to raise "TypeError: 'float' object is not iterable".
    with pytest.raises(mixupe.errors.ConfigError, match=r"must be a pair \(lo, hi\).*(0.2, 0.8)"):
        mixupe.CutMix(alpha=1.0, num_classes=2, minmax=minmax)
