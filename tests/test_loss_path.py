"""The loss path: the index form of the mixed cross-entropy against the dense form (values and
gradients), class indices against one-hot targets in every objective, segmentation label maps
with ignore_index against per-pixel hand formulas, float32 under bf16 autocast with 300
classes, and no recompilation under torch.compile."""

from __future__ import annotations

import pytest
import torch

import mixupe
from mixupe import functional as MF

B, K = 6, 4


def dense_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against probabilities, written out (classes on axis 1)."""
    return -(targets * torch.log_softmax(logits.double(), 1)).sum(1).mean()


@pytest.mark.parametrize("per_sample", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_index_form_equals_the_dense_form_with_gradients(per_sample, eps):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, K, generator=g, dtype=torch.float64, requires_grad=True)
    y, perm = torch.randint(0, K, (B,), generator=g), torch.randperm(B, generator=g)
    lam = torch.rand(B if per_sample else (), generator=g, dtype=torch.float64)
    eye = torch.eye(K, dtype=torch.float64)
    lam_v = lam.reshape(-1, 1) if per_sample else lam
    dense = lam_v * eye[y] + (1 - lam_v) * eye[y[perm]]
    dense = (1 - eps) * dense + eps / K
    want = dense_ce(logits, dense)
    got = MF.mixed_cross_entropy(logits, y, y[perm], lam, label_smoothing=eps)
    torch.testing.assert_close(got, want)
    (g_want,) = torch.autograd.grad(want, logits)
    (g_got,) = torch.autograd.grad(got, logits)
    torch.testing.assert_close(g_got, g_want)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, K))


def with_mean(objective: mixupe.MixupE) -> mixupe.MixupE:
    objective.set_data_mean(torch.zeros(1, 5))
    return objective


OBJECTIVES = {
    "erm": lambda: mixupe.ERM(num_classes=K),
    "mixup": lambda: mixupe.Mixup(alpha=1.0, num_classes=K, seed=1),
    "mixup-smoothed": lambda: mixupe.Mixup(alpha=1.0, num_classes=K, seed=1,
                                           label_smoothing=0.1),
    "cutmix": lambda: mixupe.CutMix(alpha=1.0, num_classes=K, seed=1),
    "manifold": lambda: mixupe.ManifoldMixup(alpha=1.0, layers=["1"], num_classes=K, seed=1),
    "mixupe-v1": lambda: with_mean(mixupe.MixupE(version=1, eta=0.5, mixing=mixupe.Mixup(
        alpha=1.0, num_classes=K, seed=1))),
    "regmixup": lambda: mixupe.RegMixup(mixing=mixupe.Mixup(alpha=1.0, num_classes=K, seed=1)),
}


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_class_indices_and_one_hot_targets_give_the_same_step(name):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(B, 5, generator=g), torch.randint(0, K, (B,), generator=g)
    results = []
    for labels in (y, torch.eye(K)[y]):
        model = net()
        out = OBJECTIVES[name]()(model, x, labels)
        grads = torch.autograd.grad(out.loss, list(model.parameters()))
        results.append((out, grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a.loss, b.loss)
    for p, q in zip(ga, gb, strict=True):
        torch.testing.assert_close(p, q)
    torch.testing.assert_close(a.targets, b.targets)


def test_hard_labels_build_no_dense_targets_until_read():
    x, y = torch.randn(B, 5), torch.arange(B) % K
    out = mixupe.Mixup(alpha=1.0, num_classes=K, seed=0)(net(), x, y)
    assert callable(out.__dict__["_targets_value"])  # deferred: the loss used the indices
    lam = out.lam
    want = lam * torch.eye(K)[y] + (1 - lam) * torch.eye(K)[y[out.perm]]
    torch.testing.assert_close(out.targets, want)


# ----------------------------------------------------------------- segmentation
H, W, IGNORE = 4, 5, 255


class Seg(torch.nn.Module):
    """A 1x1 convolution: per-pixel logits (B, K, H, W)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, K, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def seg_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, 3, H, W, generator=g)
    y = torch.randint(0, K, (B, H, W), generator=g)
    y[torch.rand(B, H, W, generator=g) < 0.2] = IGNORE
    return x, y


def test_cutmix_pastes_label_maps_with_the_image_box():
    x, y = seg_batch()
    out = mixupe.CutMix(alpha=1.0, num_classes=K, ignore_index=IGNORE, seed=3)(Seg(), x, y)
    perm, mask = out.perm, out.mask.expand(B, H, W)
    y_mix = y.clone()
    for b in range(B):
        for i in range(H):
            for j in range(W):
                if mask[b, i, j]:
                    y_mix[b, i, j] = y[perm[b], i, j]
    x_mix = torch.where(mask.unsqueeze(1), x[perm], x)
    logits = Seg()(x_mix)
    want = torch.nn.functional.cross_entropy(logits, y_mix, ignore_index=IGNORE)
    assert 0 < mask.float().mean() < 1
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.targets.argmax(1)[y_mix != IGNORE], y_mix[y_mix != IGNORE])


def test_mixup_label_maps_per_pixel_with_ignored_pixels():
    """Per pixel: lam [a kept] CE(a) + (1 - lam) [b kept] CE(b), divided by the total kept
    weight; a pixel ignored in one source learns from the other alone."""
    x, y = seg_batch()
    out = mixupe.Mixup(alpha=1.0, num_classes=K, ignore_index=IGNORE, seed=3)(Seg(), x, y)
    lam, perm = float(out.lam), out.perm
    logp = torch.log_softmax(Seg()(lam * x + (1 - lam) * x[perm]).double(), 1)
    total = weight = 0.0
    for b in range(B):
        for i in range(H):
            for j in range(W):
                for share, label in ((lam, int(y[b, i, j])), (1 - lam, int(y[perm[b], i, j]))):
                    if label != IGNORE:
                        total -= share * float(logp[b, label, i, j])
                        weight += share
    assert abs(float(out.loss) - total / weight) < 1e-5


def test_dense_probability_maps_mix_with_lambda_and_with_the_box():
    x, _ = seg_batch()
    g = torch.Generator().manual_seed(5)
    probs = torch.softmax(torch.randn(B, K, H, W, generator=g), 1)
    out = mixupe.Mixup(alpha=1.0, num_classes=K, seed=3)(Seg(), x, probs)
    lam = out.lam
    want = dense_ce(out.logits, lam * probs + (1 - lam) * probs[out.perm])
    torch.testing.assert_close(out.loss.double(), want)
    out = mixupe.CutMix(alpha=1.0, num_classes=K, seed=3)(Seg(), x, probs)
    pasted = torch.where(out.mask.unsqueeze(1), probs[out.perm], probs)
    torch.testing.assert_close(out.loss.double(), dense_ce(out.logits, pasted))


def test_fmix_mask_serves_label_maps_through_the_shared_path():
    x, y = seg_batch()
    fmix = mixupe.FMix(alpha=1.0, num_classes=K, seed=3)
    fmix.dense_labels = True  # FMix's own opt-in is its owners' to set
    fmix.ignore_index = IGNORE
    out = fmix(Seg(), x, y)
    mask = out.mask.expand(B, H, W)
    y_mix = torch.where(mask, y[out.perm], y)
    want = torch.nn.functional.cross_entropy(out.logits, y_mix, ignore_index=IGNORE)
    torch.testing.assert_close(out.loss, want)


def test_objectives_without_label_map_support_refuse_them():
    x, y = seg_batch()
    with pytest.raises(mixupe.InputError, match=r"dense label maps.*ERM, Mixup and CutMix"):
        mixupe.ResizeMix(num_classes=K)(Seg(), x, y)
    with pytest.raises(mixupe.InputError, match=r"need logits of shape \(6, 4, 4, 5\)"):
        mixupe.Mixup(num_classes=K, ignore_index=IGNORE)(
            torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(60, K)), x, y)
    with pytest.raises(mixupe.ConfigError, match=r"ignore_index=1\.5 is invalid"):
        mixupe.Mixup(num_classes=K, ignore_index=1.5)
    with pytest.raises(mixupe.InputError, match="label 7 is out of range"):
        mixupe.Mixup(num_classes=K, ignore_index=IGNORE)(Seg(), x, torch.full((B, H, W), 7))


# ----------------------------------------------------------------- autocast and compile
def test_bf16_autocast_keeps_lambda_targets_and_loss_in_float32():
    classes = 300
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, classes))
    x = torch.randn(B, 8)
    y = torch.tensor([257, 299, 0, 256, 255, 1])  # 257 is 256 in bfloat16
    for objective in (mixupe.Mixup(alpha=1.0, num_classes=classes, seed=0),
                      mixupe.MixupE(version=3, eta=0.1, mixing=mixupe.Mixup(
                          alpha=1.0, num_classes=classes, seed=0))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = objective(model, x, y)
        assert out.logits.dtype == torch.bfloat16  # autocast did run
        assert out.lam.dtype == torch.float32 and out.targets.dtype == torch.float32
        assert out.loss.dtype == torch.float32
        assert all(v.dtype == torch.float32 for v in out.stat_tensors.values())
        lam = out.lam
        eye = torch.eye(classes)
        torch.testing.assert_close(out.targets, lam * eye[y] + (1 - lam) * eye[y[out.perm]],
                                   rtol=0, atol=0)
        logp = torch.log_softmax(out.logits.detach().double(), 1)
        mixed = -(lam.double() * logp[torch.arange(B), y]
                  + (1 - lam.double()) * logp[torch.arange(B), y[out.perm]]).mean()
        loss = out.stat_tensors.get("mixup_loss", out.loss)
        assert abs(float(loss) - float(mixed)) < 1e-5


COMPILED = {
    "mixup": lambda: mixupe.Mixup(alpha=1.0, num_classes=K, seed=0),
    "cutmix": lambda: mixupe.CutMix(alpha=1.0, num_classes=K, seed=0, axes=(1,)),
    "manifold": lambda: mixupe.ManifoldMixup(alpha=1.0, layers=["_orig_mod.1"], num_classes=K,
                                             seed=0),
    "mixupe-v3": lambda: mixupe.MixupE(version=3, eta=0.1, mixing=mixupe.Mixup(
        alpha=1.0, num_classes=K, seed=0)),
}


@pytest.mark.parametrize("name", sorted(COMPILED))
def test_compiled_model_does_not_recompile_for_new_lambdas(name):
    dynamo = pytest.importorskip("torch._dynamo")
    dynamo.reset()
    compiled = torch.compile(net(), backend="eager", dynamic=False)
    objective = COMPILED[name]()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(B, 5, generator=g), torch.arange(B) % K
    lams = []
    objective(compiled, x, y).loss.backward()  # the first steps compile
    objective(compiled, x, y).loss.backward()
    with dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            out = objective(compiled, x, y)
            out.loss.backward()
            lams.append(float(out.lam.mean()))
    assert len(set(lams)) >= 3  # the steps drew other lambdas
