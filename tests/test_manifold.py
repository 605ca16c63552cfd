"""ManifoldMixup against mixing the layer's output by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import mixupe


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=dtype)


def seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    g = gen(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)
    return model


def ce(row: torch.Tensor, label: int) -> float:
    vals = row.tolist()
    m = max(vals)
    return m + math.log(sum(math.exp(v - m) for v in vals)) - vals[label]


def hand_loss(logits: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, lam: float) -> float:
    return sum(
        lam * ce(logits[i], int(y[i])) + (1 - lam) * ce(logits[i], int(y[int(perm[i])]))
        for i in range(len(y))
    ) / len(y)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(4, 6)
        self.block = nn.Sequential(nn.Linear(6, 6), nn.Tanh())
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.stem(x))
        h = h + self.block(h)
        return self.head(h)


X = randn(5, 4, seed=1)
Y = torch.tensor([0, 1, 2, 1, 0])
PERM = torch.tensor([2, 4, 0, 1, 3])


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_sequential_equals_hand_mixing(cut):
    net = seeded(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.Tanh(),
                               nn.Linear(6, 3)).double())
    mm = mixupe.ManifoldMixup(alpha=2.0, layers=[str(cut)], num_classes=3)
    out = mm(net, X, Y, lam=0.3, perm=PERM)
    with torch.no_grad():
        h = net[: cut + 1](X)
        h_mix = torch.stack([0.3 * h[i] + 0.7 * h[int(PERM[i])] for i in range(5)])
        logits = net[cut + 1 :](h_mix)
    assert out.layer == str(cut)
    torch.testing.assert_close(out.logits.detach(), logits)
    assert abs(float(out.loss.detach()) - hand_loss(logits, Y, PERM, 0.3)) < 1e-12


@pytest.mark.parametrize("layer", ["stem", "block", "block.0", "input"])
def test_residual_model_equals_hand_mixing(layer):
    net = seeded(Residual().double())
    mm = mixupe.ManifoldMixup(alpha=2.0, layers=["stem", "block", "block.0", "input"],
                              num_classes=3)
    out = mm(net, X, Y, lam=0.6, perm=PERM, layer=layer)

    def mix(t: torch.Tensor) -> torch.Tensor:
        return torch.stack([0.6 * t[i] + 0.4 * t[int(PERM[i])] for i in range(5)])

    with torch.no_grad():
        x = mix(X) if layer == "input" else X
        s = net.stem(x)
        s = mix(s) if layer == "stem" else s
        h = torch.relu(s)
        b0 = net.block[0](h)
        b0 = mix(b0) if layer == "block.0" else b0
        b = net.block[1](b0)
        b = mix(b) if layer == "block" else b
        logits = net.head(h + b)
    torch.testing.assert_close(out.logits.detach(), logits)
    assert abs(float(out.loss.detach()) - hand_loss(logits, Y, PERM, 0.6)) < 1e-12


def test_layer_is_drawn_from_the_list_reproducibly():
    net = seeded(Residual().double())
    layers = ["input", "stem", "block"]
    drawn = [
        mixupe.ManifoldMixup(alpha=1.0, layers=layers, num_classes=3, seed=s)(net, X, Y).layer
        for s in range(30)
    ]
    assert set(drawn) == set(layers)
    again = [
        mixupe.ManifoldMixup(alpha=1.0, layers=layers, num_classes=3, seed=s)(net, X, Y).layer
        for s in range(30)
    ]
    assert drawn == again


def test_default_layers_come_from_model_mix_layers():
    net = seeded(Residual().double())
    net.mix_layers = ("block",)
    out = mixupe.ManifoldMixup(alpha=1.0, num_classes=3)(net, X, Y)
    assert out.layer == "block"


def test_hooks_are_removed_after_the_call():
    net = seeded(Residual().double())
    mixupe.ManifoldMixup(alpha=1.0, layers=["block"], num_classes=3)(net, X, Y)
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    before = net(X)
    torch.testing.assert_close(net(X), before)


def test_mixing_keeps_the_layer_dtype_under_autocast():
    net = seeded(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)))
    seen: dict[str, torch.dtype] = {}
    net[2].register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0].dtype))
    mm = mixupe.ManifoldMixup(alpha=1.0, layers=["0"], num_classes=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = mm(net, X.float(), Y, lam=0.3, perm=PERM)
    assert seen["in"] == torch.bfloat16
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


class FakeGraphBatch:
    """A stand-in for a PyG Batch: node features, graph index and num_graphs."""

    def __init__(self, x: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> None:
        self.x, self.batch, self.num_graphs = x, batch, num_graphs


class GraphNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.node = nn.Linear(4, 6)
        self.pool = nn.Identity()
        self.head = nn.Linear(6, 3)

    def forward(self, data: FakeGraphBatch) -> torch.Tensor:
        h = torch.relu(self.node(data.x))
        pooled = torch.zeros(data.num_graphs, h.shape[1], dtype=h.dtype).index_add(0, data.batch, h)
        return self.head(self.pool(pooled))


def test_graph_batches_mix_the_pooled_embedding():
    net = seeded(GraphNet().double())
    batch = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4])
    data = FakeGraphBatch(randn(9, 4, seed=3), batch, 5)
    out = mixupe.ManifoldMixup(alpha=1.0, layers=["pool"], num_classes=3)(
        net, data, Y, lam=0.3, perm=PERM
    )
    with torch.no_grad():
        h = torch.relu(net.node(data.x))
        pooled = torch.zeros(5, 6, dtype=h.dtype).index_add(0, batch, h)
        logits = net.head(torch.stack([0.3 * pooled[i] + 0.7 * pooled[int(PERM[i])]
                                       for i in range(5)]))
    torch.testing.assert_close(out.logits.detach(), logits)
    with pytest.raises(mixupe.ConfigError, match=r"ManifoldMixup\(layers=\['pool'\]\)"):
        mixupe.Mixup(alpha=1.0, num_classes=3)(net, data, Y)
    with pytest.raises(mixupe.ConfigError, match="cannot mix at 'input'"):
        mixupe.ManifoldMixup(alpha=1.0, layers=["input"], num_classes=3)(net, data, Y)


def test_unknown_layer_names_raise():
    net = seeded(Residual().double())
    with pytest.raises(mixupe.ConfigError, match=r"\['blok'\] do not exist.*'block'"):
        mixupe.ManifoldMixup(alpha=1.0, layers=["blok"], num_classes=3)(net, X, Y)
    with pytest.raises(mixupe.ConfigError, match=r"\['nope'\] do not exist"):
        mixupe.ManifoldMixup(alpha=1.0, layers=["stem"], num_classes=3)(net, X, Y, layer="nope")
    with pytest.raises(mixupe.ConfigError, match="no mix_layers attribute"):
        mixupe.ManifoldMixup(alpha=1.0, num_classes=3)(net, X, Y)


def test_batch_of_one_equals_erm():
    net = seeded(Residual().double())
    out = mixupe.ManifoldMixup(alpha=1.0, layers=["block"], num_classes=3)(net, X[:1], Y[:1])
    assert abs(float(out.loss.detach()) - ce(net(X[:1])[0].detach(), int(Y[0]))) < 1e-12


class SharedBlock(nn.Module):
    """Calls the same submodule twice; only its first call may be mixed."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.shared = nn.Linear(6, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.shared(torch.tanh(self.inp(x))))
        return self.head(torch.tanh(self.shared(h)))


def test_shared_submodule_is_mixed_at_its_first_call_only():
    net = seeded(SharedBlock().double())
    out = mixupe.ManifoldMixup(alpha=1.0, layers=["shared"], num_classes=3)(
        net, X, Y, lam=0.3, perm=PERM
    )
    with torch.no_grad():
        a = net.shared(torch.tanh(net.inp(X)))
        a = torch.stack([0.3 * a[i] + 0.7 * a[int(PERM[i])] for i in range(5)])
        logits = net.head(torch.tanh(net.shared(torch.tanh(a))))
    torch.testing.assert_close(out.logits.detach(), logits)


def test_erm_and_fast_mixupe_run_on_graph_batches():
    net = seeded(GraphNet().double())
    data = FakeGraphBatch(randn(9, 4, seed=3), torch.tensor([0, 0, 1, 2, 2, 2, 3, 4, 4]), 5)
    out = mixupe.ERM(num_classes=3)(net, data, Y)
    with torch.no_grad():
        ref = sum(ce(row, int(label)) for row, label in zip(net(data), Y, strict=True)) / 5
    assert abs(float(out.loss.detach()) - ref) < 1e-12
    obj = mixupe.MixupE(mixing=mixupe.ManifoldMixup(layers=["pool"], num_classes=3), version=3)
    assert torch.isfinite(obj(net, data, Y).loss)
