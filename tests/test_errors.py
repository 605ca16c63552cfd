"""Every deliberate error of the core library: the type, and a message naming value and fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import mixupe
from mixupe import functional as MF
from mixupe.errors import ConfigError, InputError, MixupeError, NonFiniteLossError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def net() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))
    g = gen(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


X = torch.randn(6, 4, generator=gen(1))
Y = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("factory", [
    lambda a: mixupe.Mixup(alpha=a, num_classes=3),
    lambda a: mixupe.CutMix(alpha=a, num_classes=3),
    lambda a: mixupe.ManifoldMixup(alpha=a, layers=["1"], num_classes=3),
    lambda a: mixupe.MixupE(alpha=a, num_classes=3),
    lambda a: MF.sample_lambda(a, generator=gen()),
    lambda a: MF.mixupe_constant(a),
])
def test_alpha_must_be_positive(factory, alpha):
    with pytest.raises(ConfigError, match=r"alpha=.* is invalid.*alpha > 0.*alpha=1\.0"):
        factory(alpha)


@pytest.mark.parametrize("eta", [-1e-3, float("nan")])
def test_eta_must_be_non_negative(eta):
    with pytest.raises(ConfigError, match=r"eta=.* is invalid.*>= 0"):
        mixupe.MixupE(eta=eta, num_classes=3)


@pytest.mark.parametrize("version", [0, 5, "3", True])
def test_unknown_version(version):
    with pytest.raises(ConfigError, match=r"version=.* is unknown: use 1, 2, 3 or 4"):
        mixupe.MixupE(version=version, num_classes=3)


@pytest.mark.parametrize(("option", "value", "pattern"), [
    ("threshold", float("nan"), r"threshold=nan is invalid.*None"),
    ("fast_sign", 0, r"fast_sign=0 is invalid: use -1.*\+1"),
    ("clean_pass", "both", r"clean_pass='both' is unknown: use 'separate'.*'fused'"),
    ("derivative", "fd", r"derivative='fd' is unknown: use 'vjp'.*'jvp'"),
    ("mean_decay", 1.0, r"mean_decay=1.0 is invalid: use a value in \[0, 1\)"),
    ("mixing", mixupe.ERM(num_classes=3), r"not a mixing objective.*ERM does not mix"),
    ("label_smoothing", 1.5, r"label_smoothing=1.5 is invalid"),
    ("num_classes", 1, r"num_classes=1 is invalid.*int >= 2"),
])
def test_bad_mixupe_options(option, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        mixupe.MixupE(**{"num_classes": 3, option: value})


def test_mixupe_and_mixing_must_agree():
    with pytest.raises(ConfigError, match=r"MixupE\(alpha=1.0\) differs.*alpha=2.0.*same alpha"):
        mixupe.MixupE(alpha=1.0, mixing=mixupe.Mixup(alpha=2.0, num_classes=3))
    with pytest.raises(ConfigError, match=r"MixupE\(num_classes=4\) differs.*num_classes=3"):
        mixupe.MixupE(num_classes=4, mixing=mixupe.Mixup(num_classes=3))
    with pytest.raises(ConfigError, match=r"label_smoothing=0.1\) differs.*mixing objective only"):
        mixupe.MixupE(label_smoothing=0.1, mixing=mixupe.Mixup(num_classes=3))


def test_seed_and_generator_are_exclusive():
    with pytest.raises(ConfigError, match=r"both seed=1 and generator= were given"):
        mixupe.Mixup(num_classes=3, seed=1, generator=gen())
    with pytest.raises(ConfigError, match=r"not a torch.Generator"):
        mixupe.Mixup(num_classes=3, generator=42)  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [1, 2])
def test_versions_1_and_2_need_a_data_mean(version):
    obj = mixupe.MixupE(version=version, num_classes=3)
    with pytest.raises(ConfigError, match=rf"version {version} needs the data mean.*set_data_mean"):
        obj(net(), X, Y)


def test_data_mean_of_the_wrong_shape():
    obj = mixupe.MixupE(version=1, num_classes=3)
    obj.set_data_mean(torch.zeros(5))
    pattern = r"data mean has shape \(5,\).*\(4,\).*mean of shape \(4,\)"
    with pytest.raises(InputError, match=pattern):
        obj(net(), X, Y)
    with pytest.raises(InputError, match=r"data mean .* is invalid"):
        obj.set_data_mean(torch.tensor(0.0))
    with pytest.raises(InputError, match=r"data mean holds 1 non-finite"):
        obj.set_data_mean(torch.tensor([0.0, float("nan")]))
    with pytest.raises(InputError, match=r"fit_data_mean got no samples"):
        obj.fit_data_mean([])
    with pytest.raises(InputError, match=r"different sample shapes"):
        obj.fit_data_mean([torch.zeros(2, 3), torch.zeros(2, 4)])


@pytest.mark.parametrize("objective", [
    lambda: mixupe.ERM(num_classes=3),
    lambda: mixupe.Mixup(num_classes=3),
    lambda: mixupe.MixupE(num_classes=3),
])
def test_labels_out_of_range(objective):
    with pytest.raises(InputError, match=r"label 3 is out of range for num_classes=3.*\[0, 2\]"):
        objective()(net(), X, torch.tensor([0, 1, 2, 3, 0, 1]))
    with pytest.raises(InputError, match=r"label -1 is out of range"):
        objective()(net(), X, torch.tensor([0, 1, 2, -1, 0, 1]))


def test_labels_of_the_wrong_dtype_or_shape():
    mix = mixupe.Mixup(num_classes=3)
    with pytest.raises(InputError, match=r"dtype torch.bool are not supported.*int64"):
        mix(net(), X, torch.ones(6, dtype=torch.bool))
    with pytest.raises(InputError, match=r"soft targets must have shape \(B, K\), got \(6,\)"):
        mix(net(), X, Y.float())
    with pytest.raises(InputError, match=r"integer labels must have shape \(B,\)"):
        mix(net(), X, Y.reshape(6, 1))
    with pytest.raises(InputError, match=r"soft targets have 4 classes but num_classes=3"):
        mix(net(), X, torch.full((6, 4), 0.25))
    with pytest.raises(InputError, match=r"labels of type list are not supported"):
        mix(net(), X, [0, 1])  # type: ignore[arg-type]


def test_integer_labels_need_num_classes():
    with pytest.raises(ConfigError, match=r"integer labels need num_classes: pass num_classes=K"):
        mixupe.Mixup()(net(), X, Y)


def test_batch_and_label_size_mismatch():
    with pytest.raises(InputError, match=r"batch size mismatch: 6 inputs.*\(5,\)"):
        mixupe.Mixup(num_classes=3)(net(), X, Y[:5])
    with pytest.raises(InputError, match=r"the batch is empty"):
        mixupe.ERM(num_classes=3)(net(), X[:0], Y[:0])


def test_model_output_must_match_the_classes():
    with pytest.raises(InputError, match=r"logits of shape \(6, 3\).*\(6, 4\).*num_classes"):
        mixupe.Mixup(num_classes=4)(net(), X, Y)


class NaNModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * float("nan")


@pytest.mark.parametrize("objective", [
    lambda: mixupe.ERM(num_classes=3),
    lambda: mixupe.Mixup(num_classes=3),
    lambda: mixupe.CutMix(num_classes=3),
    lambda: mixupe.ManifoldMixup(layers=["lin"], num_classes=3),
    lambda: mixupe.MixupE(num_classes=3, version=4),
])
def test_non_finite_loss_raises(objective):
    with pytest.raises(NonFiniteLossError, match=r"loss is nan.*Lower the learning rate"):
        objective()(NaNModel(), X, Y)


def test_non_finite_inputs_raise_when_validating():
    bad = X.clone()
    bad[2, 1] = float("inf")
    with pytest.raises(InputError, match=r"input batch x holds 1 non-finite value"):
        mixupe.Mixup(num_classes=3)(net(), bad, Y)


def test_unknown_layer_names():
    with pytest.raises(ConfigError, match=r"\['9'\] do not exist in Sequential.*'0', '1', '2'"):
        mixupe.ManifoldMixup(layers=["9"], num_classes=3)(net(), X, Y)
    with pytest.raises(ConfigError, match=r"layers='1' is invalid: pass a list"):
        mixupe.ManifoldMixup(layers="1", num_classes=3)
    with pytest.raises(ConfigError, match=r"layers=\[\] is empty"):
        mixupe.ManifoldMixup(layers=[], num_classes=3)


def test_given_lam_and_perm_are_checked():
    mix = mixupe.Mixup(num_classes=3)
    with pytest.raises(ConfigError, match=r"lam=1.5 is invalid: pass a value in \[0, 1\]"):
        mix(net(), X, Y, lam=1.5)
    with pytest.raises(InputError, match=r"lam of shape \(2,\) is invalid.*\(6,\)"):
        mix(net(), X, Y, lam=torch.tensor([0.1, 0.2]))
    with pytest.raises(InputError, match=r"perm of shape \(5,\) is invalid.*randperm\(6\)"):
        mix(net(), X, Y, perm=torch.arange(5))
    with pytest.raises(InputError, match=r"perm holds index 6, outside \[0, 5\]"):
        mix(net(), X, Y, perm=torch.tensor([0, 1, 2, 3, 4, 6]))
    with pytest.raises(ConfigError, match=r"ERM does not mix"):
        mixupe.ERM(num_classes=3)(net(), X, Y, lam=0.5)


@pytest.mark.parametrize("lam", [torch.tensor(1.5), torch.tensor(-0.25),
                                 torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 1.25]),
                                 torch.tensor(float("nan"))])
def test_tensor_lam_outside_unit_interval_is_refused_like_a_float(lam):
    for objective in (mixupe.Mixup(num_classes=3, per_sample=True),
                      mixupe.CutMix(num_classes=3, spatial_dims=1),
                      mixupe.ManifoldMixup(layers=["1"], num_classes=3),
                      mixupe.MixupE(num_classes=3)):
        with pytest.raises(ConfigError, match=r"lam holds .*, outside \[0, 1\]"):
            objective(net(), X, Y, lam=lam)
    with pytest.raises(InputError, match=r"lam of dtype torch.int64 is invalid"):
        mixupe.Mixup(num_classes=3)(net(), X, Y, lam=torch.tensor(1))


def test_perm_with_duplicate_indices_is_refused():
    with pytest.raises(InputError, match=r"perm holds index 1 2 times.*each index once"):
        mixupe.Mixup(num_classes=3)(net(), X, Y, perm=torch.tensor([0, 1, 1, 3, 4, 5]))


@pytest.mark.parametrize("soft", [
    torch.tensor([[1.5, -0.5, 0.0]] * 6),   # negative entry, rows sum to 1
    torch.tensor([[0.5, 0.5, 0.5]] * 6),    # rows sum to 1.5
])
def test_soft_targets_that_are_not_distributions_are_refused(soft):
    for objective in (mixupe.ERM(), mixupe.Mixup(), mixupe.MixupE()):
        with pytest.raises(InputError, match=r"probability distribution"):
            objective(net(), X, soft)


def test_integer_inputs_to_input_mixing_are_refused():
    """The issue's reproduction: uint8/int inputs would be mixed with lambda cast to 0."""
    f = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    x = torch.tensor([[10, 0], [20, 0], [30, 0], [40, 0]])
    y = torch.tensor([0, 1, 2, 0])
    perm = torch.tensor([1, 0, 3, 2])
    for objective in (mixupe.Mixup(alpha=1.0, num_classes=3),
                      mixupe.ManifoldMixup(layers=["input"], num_classes=3),
                      mixupe.MixupE(version=3, num_classes=3)):
        with pytest.raises(InputError, match=r"cannot mix inputs of dtype torch.int64.*float"):
            objective(f, x, y, lam=0.7, perm=perm)
    # CutMix pastes values, so integer inputs stay exact; versions 1/2 need a derivative though
    pasted = mixupe.CutMix(num_classes=3)(lambda t: f(t.float()), x, y, lam=0.5, perm=perm)
    assert pasted.loss.isfinite()
    obj = mixupe.MixupE(version=1, mixing=mixupe.CutMix(num_classes=3))
    obj.set_data_mean(torch.zeros(2))
    with pytest.raises(ConfigError, match=r"version 1 differentiates.*floating-point inputs"):
        obj(lambda t: f(t.float()), x, y)


@pytest.mark.parametrize(("make", "pattern"), [
    (lambda: mixupe.Mixup(alpha=True, num_classes=3), r"alpha=True is invalid"),
    (lambda: mixupe.MixupE(alpha=True, num_classes=3), r"alpha=True is invalid"),
    (lambda: MF.sample_lambda(True, generator=gen()), r"alpha=True is invalid"),
    (lambda: mixupe.MixupE(version=3.0, num_classes=3), r"version=3.0 is unknown"),
    (lambda: mixupe.MixupE(eta=True, num_classes=3), r"eta=True is invalid"),
    (lambda: mixupe.MixupE(threshold=True, num_classes=3), r"threshold=True is invalid"),
    (lambda: mixupe.Mixup(seed="abc", num_classes=3), r"seed='abc' is invalid: pass an integer"),
    (lambda: mixupe.MixupE(seed=1.5, num_classes=3), r"seed=1.5 is invalid"),
    (lambda: mixupe.ERM(seed=True, num_classes=3), r"seed=True is invalid"),
])
def test_booleans_floats_and_strings_are_not_silently_converted(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()


def test_numpy_integer_seeds_are_integers():
    import numpy as np

    a = mixupe.Mixup(num_classes=3, seed=np.int64(5))(net(), X, Y)
    b = mixupe.Mixup(num_classes=3, seed=5)(net(), X, Y)
    assert torch.equal(a.perm, b.perm) and torch.equal(a.lam, b.lam)


def test_cutmix_shape_errors():
    with pytest.raises(ConfigError, match=r"cannot infer the CutMix box.*spatial_dims=1"):
        mixupe.CutMix(num_classes=3)(net(), torch.zeros(6, 1, 2, 2, 2), Y)
    with pytest.raises(ConfigError, match=r"spatial_dims=3 is invalid"):
        mixupe.CutMix(spatial_dims=3, num_classes=3)
    for axes in ((0,), (1, 2, 3), (2, 2), "1", (True,)):
        with pytest.raises(ConfigError, match=r"axes=.* is invalid: pass one or two distinct"):
            mixupe.CutMix(axes=axes, num_classes=3)
    with pytest.raises(ConfigError, match=r"both axes=\(1,\) and spatial_dims=1"):
        mixupe.CutMix(axes=(1,), spatial_dims=1, num_classes=3)
    with pytest.raises(ConfigError, match=r"axes=\(3,\) do not fit inputs of shape \(6, 4\)"):
        mixupe.CutMix(axes=(3,), num_classes=3)(net(), X, Y)
    with pytest.raises(InputError, match=r"CutMix spatial shape \(2, 2, 2\) is unsupported"):
        MF.cutmix_mask((2, 2, 2), torch.tensor(0.5), generator=gen())


class FakeGraphBatch:
    num_graphs = 6


def test_fused_clean_pass_needs_tensor_inputs():
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(layers=["pool"], num_classes=3),
                        clean_pass="fused")
    with pytest.raises(ConfigError, match=r"clean_pass='fused' needs tensor inputs.*'separate'"):
        obj(net(), FakeGraphBatch(), Y)


def test_functional_option_errors():
    with pytest.raises(ConfigError, match=r"reduction='avg' is unknown"):
        MF.soft_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ConfigError, match=r"integer labels need num_classes"):
        MF.mix_targets(Y, Y, 0.5)
    with pytest.raises(ConfigError, match=r"needs either logits_tangent="):
        MF.directional_derivative_score(torch.zeros(2, 3), torch.zeros(2, 3))


def test_errors_are_also_builtin_types():
    assert issubclass(ConfigError, ValueError) and issubclass(InputError, ValueError)
    assert issubclass(NonFiniteLossError, FloatingPointError)
    assert all(issubclass(e, MixupeError) for e in (ConfigError, InputError, NonFiniteLossError))


def test_jvp_under_autocast_is_refused():
    obj = mixupe.MixupE(version=1, derivative="jvp", num_classes=3)
    obj.set_data_mean(torch.zeros(4))
    with pytest.raises(ConfigError, match=r"derivative='jvp' cannot run under torch.autocast.*"
                                          r"derivative='vjp'"), \
            torch.autocast("cpu", dtype=torch.bfloat16):
        obj(net(), X, Y)
