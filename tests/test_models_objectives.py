"""Every model runs every objective on its own domain's data, MixupE versions 1 and 3 included;
graphs refuse input-space mixing and mix the pooled embedding instead.

"The clean loss went down" alone would pass with the MixupE term dropped or its sign flipped,
so each MixupE case first checks its parameter gradient, in float64 and in train mode
(BatchNorm, dropout), against the loss written out here by hand: Mixup's loss plus
``sign eta c`` times the sum of the selected scores, rescaled. The version-3 score is its
formula; the version-1 score of sample j is a central difference of the whole batch's
``sum_i r_i^T f_i`` with only sample j (input or representation) moved along its direction,
which is what the released double backward computes under train-mode BatchNorm. The same
check asserts that the hand loss with the term dropped or with its sign flipped gives a
clearly different gradient.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import mixupe
import mixupe.data as D
import mixupe.models as M
from mixupe.errors import ConfigError

CASES = {
    "mlp": ("letter", {"hidden": (64, 64), "batch_norm": True, "dropout": 0.1}),
    "small-cnn": ("digits", {"channels": (16, 32)}),
    "preact-resnet18": ("digits", {"width": 8}),
    "mfcc-cnn": ("fsdd", {"channels": (16, 32, 32)}),
    "gin": ("solubility", {"hidden": 32}),
}
TENSOR_OBJECTIVES = ["erm", "mixup", "cutmix", "manifold", "mixupe1", "mixupe3",
                     "mixupe1-manifold", "mixupe3-manifold"]
GRAPH_OBJECTIVES = ["erm", "manifold", "mixupe1-manifold", "mixupe3-manifold"]
_DATA: dict[str, D.Dataset] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine: threads only contend
    yield
    torch.set_num_threads(before)


def dataset(name: str) -> D.Dataset:
    if name not in _DATA:
        _DATA[name] = D.load(name, seed=0, subset=200)
    return _DATA[name]


def make_objective(kind: str, k: int, train_x: torch.Tensor | None):
    if kind == "erm":
        return mixupe.ERM(num_classes=k)
    if kind == "mixup":
        return mixupe.Mixup(alpha=1.0, num_classes=k, seed=0)
    if kind == "cutmix":
        return mixupe.CutMix(alpha=1.0, num_classes=k, seed=0)
    if kind == "manifold":
        return mixupe.ManifoldMixup(alpha=2.0, num_classes=k, seed=0)
    version = int(kind[6])
    if kind.endswith("manifold"):
        mixing = mixupe.ManifoldMixup(alpha=2.0, num_classes=k)
    else:
        mixing = mixupe.Mixup(alpha=2.0, num_classes=k)
    # Version 1 selects the scores below 0: with every score selected its term is the whole
    # batch's derivative along x_bar - x, which train-mode BatchNorm right after the first
    # linear map (the MLP here) makes vanish, since moving the batch towards its mean is
    # an affine map of every feature.
    objective = mixupe.MixupE(alpha=2.0, eta=0.1, version=version, mixing=mixing,
                              num_classes=k, seed=0, threshold=0.0 if version == 1 else 1.0)
    if version == 1 and train_x is not None:
        # A leading 1 keeps single-channel image means (1, H, W) unambiguous.
        objective.set_data_mean(train_x.mean(0, keepdim=True))
    return objective


def model_and_batch(model_name: str, n: int = 24):
    ds_name, options = CASES[model_name]
    ds = dataset(ds_name)
    torch.manual_seed(0)  # parameter initialisation only
    net = M.build(model_name, input_shape=ds.input_shape, num_classes=ds.num_classes, **options)
    x, y = next(D.batches(ds.train, batch_size=n, shuffle=True,
                          generator=torch.Generator().manual_seed(1)))
    return ds, net, x, y


def clean_loss(net, x, y) -> float:
    net.eval()
    with torch.no_grad():
        loss = float(F.cross_entropy(net(x), y))
    net.train()
    return loss


def to_double(x):
    """float64, with a little noise: exact ties (digits have many equal pixels) make max-pooling
    non-differentiable, where a central difference and a gradient disagree."""
    g = torch.Generator().manual_seed(5)
    if isinstance(x, torch.Tensor):
        return x.double() + 5e-2 * torch.randn(x.shape, generator=g, dtype=torch.float64)
    x = x.clone()  # a PyG batch: only the node features are floating point
    x.x = x.x.double() + 5e-2 * torch.randn(x.x.shape, generator=g, dtype=torch.float64)
    return x


def run_at(net, x, layer, fn):
    """``net(x)`` with the output of ``layer`` (or the input) replaced by ``fn(h)``."""
    if layer == "input":
        return net(fn(x))
    handle = net.get_submodule(layer).register_forward_hook(lambda _m, _a, h: fn(h))
    try:
        return net(x)
    finally:
        handle.remove()


def hand_parts(net, x, y, out, objective, data_mean, seed):
    """Mixup's loss and the MixupE term (the sum of the selected scores) of the step ``out``
    describes, by hand (see above), with the gradient of each."""
    lam, perm, layer = float(out.lam), out.perm, out.layer
    k, b = objective.num_classes, len(y)
    torch.manual_seed(seed)  # the dropout masks of the library's mixed pass ...
    logits_mix = run_at(net, x, layer, lambda h: lam * h + (1 - lam) * h[perm])
    after_mix = torch.get_rng_state()  # ... and of its clean pass
    l_mix = (lam * F.cross_entropy(logits_mix, y)
             + (1 - lam) * F.cross_entropy(logits_mix, y[perm]))
    onehot = F.one_hot(y, k).double()

    def clean(sample=0, t=0.0):
        torch.set_rng_state(after_mix)
        if objective.version == 3:
            return net(x)

        def move(h):
            target = data_mean if layer == "input" else h.detach().mean(0)
            only = (torch.arange(h.shape[0]) == sample).reshape(-1, *[1] * (h.dim() - 1))
            return h + t * only * (target - h.detach())

        return run_at(net, x, layer, move)

    if objective.version == 3:
        f = clean()
        scores = ((onehot - f.softmax(1)) * f).sum(1)
    else:
        step = 1e-7
        r = (clean().softmax(1) - onehot).detach()
        scores = torch.stack([((r * clean(j, step)).sum() - (r * clean(j, -step)).sum())
                              / (2 * step) for j in range(b)])
    term = (scores * (scores.detach() < objective.threshold)).sum()
    parts = []
    for value in (l_mix, term):
        net.zero_grad()
        value.backward(retain_graph=True)
        parts.append((float(value), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                     for p in net.parameters()]))
    return parts


def check_mixupe_gradient(model_name: str, kind: str, net, x, y, ds) -> None:
    net64, x64 = copy.deepcopy(net).double(), to_double(x)
    train_x = ds.train.x.double() if ds.domain != "graphs" else None
    objective = make_objective(kind, ds.num_classes, train_x)
    data_mean = train_x.mean(0) if train_x is not None else None
    lib_net, seed = copy.deepcopy(net64), 1234
    torch.manual_seed(seed)
    out = objective(lib_net, x64, y)
    out.loss.backward()
    got = [torch.zeros_like(p) if p.grad is None else p.grad for p in lib_net.parameters()]
    (l_mix, g_mix), (term, g_term) = hand_parts(copy.deepcopy(net64), x64, y, out, objective,
                                                data_mean, seed)
    sign = -1.0 if objective.version == 3 else 1.0
    weight = sign * objective.eta * objective.c / len(y)

    def by_hand(term_sign: float) -> list[torch.Tensor]:
        scale = abs(l_mix) / abs(l_mix + term_sign * weight * term)  # the rescaling
        return [scale * (a + term_sign * weight * c) for a, c in zip(g_mix, g_term, strict=True)]

    size = max(float(g.abs().max()) for g in got)
    for a, b in zip(got, by_hand(1.0), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * size, msg=f"{model_name}/{kind}")
    for term_sign in (0.0, -1.0):  # the term dropped, or its sign flipped: clearly different
        gap = max(float((a - b).abs().max()) for a, b in zip(got, by_hand(term_sign),
                                                             strict=True))
        assert gap > 1e-3 * size, f"{model_name}/{kind}: the term changes the gradient by {gap}"


def run_and_train(model_name: str, kind: str):
    ds, net, x, y = model_and_batch(model_name)
    train_x = ds.train.x if ds.domain != "graphs" else None
    if kind.startswith("mixupe"):
        check_mixupe_gradient(model_name, kind, net, x, y, ds)
    objective = make_objective(kind, ds.num_classes, train_x)
    out = objective(net, x, y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (len(y), ds.num_classes)
    out.loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    before = clean_loss(net, x, y)
    optimiser = torch.optim.Adam(net.parameters(), lr=5e-3)
    for _ in range(25):
        optimiser.zero_grad()
        objective(net, x, y).loss.backward()
        optimiser.step()
    after = clean_loss(net, x, y)
    assert after < before, f"{model_name}/{kind}: clean loss {before:.3f} -> {after:.3f}"


TENSOR_CASES = [(m, k) for m in CASES if m != "gin" for k in TENSOR_OBJECTIVES]


@pytest.mark.parametrize(("model_name", "kind"), TENSOR_CASES)
def test_tensor_models_run_every_objective(model_name, kind):
    run_and_train(model_name, kind)


@pytest.mark.needs("torch_geometric")
@pytest.mark.parametrize("kind", GRAPH_OBJECTIVES)
def test_gin_runs_every_graph_objective(kind):
    run_and_train("gin", kind)


@pytest.mark.needs("torch_geometric")
def test_graph_batches_refuse_input_space_mixing():
    ds, net, x, y = model_and_batch("gin")
    k = ds.num_classes
    for objective in (
        mixupe.Mixup(alpha=1.0, num_classes=k),
        mixupe.CutMix(alpha=1.0, num_classes=k),
        mixupe.MixupE(version=3, num_classes=k),
        mixupe.ManifoldMixup(alpha=2.0, layers=["input"], num_classes=k),
    ):
        with pytest.raises(ConfigError, match=r"ManifoldMixup\(layers=\['pool'\]\)"):
            objective(net, x, y)


@pytest.mark.parametrize("model_name", [
    pytest.param(m, marks=pytest.mark.needs("torch_geometric")) if m == "gin" else m
    for m in sorted(CASES)])
def test_mixupe_v3_loss_matches_a_hand_computation(model_name):
    """MixupE v3 through each model's hooks equals the formula evaluated by hand (eval mode)."""
    ds, net, x, y = model_and_batch(model_name, n=10)
    net.eval()
    k, alpha, eta, lam = ds.num_classes, 2.0, 0.5, 0.7
    perm = torch.roll(torch.arange(len(y)), 1)
    mixing = (mixupe.ManifoldMixup(alpha=alpha, num_classes=k, layers=[net.mix_layers[0]])
              if ds.domain == "graphs" else mixupe.Mixup(alpha=alpha, num_classes=k))
    objective = mixupe.MixupE(alpha=alpha, eta=eta, version=3, mixing=mixing, num_classes=k,
                              threshold=1.0, rescale=False)
    out = objective(net, x, y, lam=lam, perm=perm)

    # By hand: mix at the first mix layer (or the input) with a forward hook written here.
    if ds.domain == "graphs":
        module = net.get_submodule(net.mix_layers[0])
        handle = module.register_forward_hook(lambda _m, _a, h: lam * h + (1 - lam) * h[perm])
        logits_mix = net(x)
        handle.remove()
    else:
        logits_mix = net(lam * x + (1 - lam) * x[perm])
    mix_loss = lam * F.cross_entropy(logits_mix, y) + (1 - lam) * F.cross_entropy(
        logits_mix, y[perm]
    )
    logits = net(x)
    onehot = F.one_hot(y, k).float()
    scores = ((onehot - logits.softmax(1)) * logits).sum(1)
    selected = (scores.detach() < 1.0).float()
    c = alpha / (2 * alpha + 1)
    expected = mix_loss - eta * c * (scores * selected).sum() / len(y)
    assert torch.allclose(out.loss, expected, atol=1e-5)


@pytest.mark.needs("torch_geometric")
def test_gin_clean_subset_is_a_batch_of_the_chosen_graphs():
    """MixupE's clean pass on part of a graph batch runs the model on exactly those graphs."""
    ds, net, x, y = model_and_batch("gin", n=10)
    net.eval()
    index = torch.tensor([7, 1, 4])
    mixing = mixupe.ManifoldMixup(alpha=2.0, layers=["pool"], num_classes=ds.num_classes)
    objective = mixupe.MixupE(eta=0.5, version=3, mixing=mixing, clean_fraction=0.3,
                              rescale=False)
    out = objective(net, x, y, clean_subset=index)
    chosen = type(x).from_data_list([x.get_example(int(i)) for i in index])
    logits = net(chosen)
    onehot = F.one_hot(y[index], ds.num_classes).float()
    torch.testing.assert_close(out.clean_logits, logits)
    torch.testing.assert_close(out.scores, ((onehot - logits.softmax(1)) * logits).sum(1))
