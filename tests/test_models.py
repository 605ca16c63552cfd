"""Models: shapes, mix layers, architecture facts, invariances, and overfitting a tiny batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixupe.data as D
import mixupe.models as M
from mixupe.errors import ConfigError, InputError

# model -> (dataset, build options): small models so the suite runs on 2 CPU cores.
CASES = {
    "mlp": ("letter", {"hidden": (64, 64), "batch_norm": True, "dropout": 0.1}),
    "small-cnn": ("digits", {"channels": (16, 32)}),
    "small-vgg": ("fsdd", {"channels": (8, 16, 16), "convs": (1, 1, 2), "dropout": 0.0}),
    "preact-resnet18": ("digits", {"width": 8}),
    "mfcc-cnn": ("fsdd", {"channels": (16, 32, 32)}),
    "gin": ("solubility", {"hidden": 32, "num_layers": 3}),
}
# The GIN cases need PyTorch Geometric; the other models run without it.
MODELS = [pytest.param(m, marks=pytest.mark.needs("torch_geometric")) if m == "gin" else m
          for m in sorted(CASES)]
_DATA: dict[str, D.Dataset] = {}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny tensors on a shared 2-core machine: extra intra-op threads only contend (10-40x
    # slower under load), so this module runs single-threaded and restores the setting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def dataset(name: str) -> D.Dataset:
    if name not in _DATA:
        _DATA[name] = D.load(name, seed=0)
    return _DATA[name]


def tiny_batch(name: str, n: int = 16):
    ds = dataset(name)
    return next(D.batches(ds.train, batch_size=n, shuffle=True,
                          generator=torch.Generator().manual_seed(0)))


def build(model_name: str):
    torch.manual_seed(0)  # parameter initialisation only; the test data are fixed
    ds_name, options = CASES[model_name]
    ds = dataset(ds_name)
    return M.build(model_name, input_shape=ds.input_shape, num_classes=ds.num_classes, **options)


def test_names():
    assert M.names() == sorted(CASES)


@pytest.mark.parametrize("model_name", MODELS)
def test_logits_shape_and_mix_layers_output_per_sample(model_name):
    net = build(model_name)
    x, _ = tiny_batch(CASES[model_name][0], n=6)
    modules = dict(net.named_modules())
    seen = {}
    handles = [
        modules[name].register_forward_hook(
            lambda _m, _a, out, name=name: seen.__setitem__(name, out)
        )
        for name in net.mix_layers
    ]
    logits = net(x)
    for h in handles:
        h.remove()
    assert logits.shape == (6, dataset(CASES[model_name][0]).num_classes)
    assert net.mix_layers and set(seen) == set(net.mix_layers)
    for out in seen.values():
        assert isinstance(out, torch.Tensor) and out.shape[0] == 6


@pytest.mark.parametrize("model_name", MODELS)
def test_overfits_a_tiny_batch(model_name):
    net = build(model_name)
    x, y = tiny_batch(CASES[model_name][0])
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    first = None
    for _ in range(60):
        optimiser.zero_grad()
        loss = F.cross_entropy(net(x), y)
        first = float(loss.detach()) if first is None else first
        loss.backward()
        optimiser.step()
    net.eval()
    with torch.no_grad():
        final = float(F.cross_entropy(net(x), y))
    assert first > 0.5
    assert final < 0.1, f"{model_name}: loss {first:.3f} -> {final:.3f}"


def test_preact_resnet18_has_18_weight_layers_and_scales_with_width():
    net = M.build("preact-resnet18", input_shape=(3, 32, 32), num_classes=10, width=4)
    convs3 = [
        m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
    ]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs3) + len(linears) == 18
    assert [net.get_submodule(f"layer{i}")[0].conv1.out_channels for i in (1, 2, 3, 4)] == [
        4, 8, 16, 32,
    ]
    wide = M.build("preact-resnet18", input_shape=(3, 32, 32), num_classes=10, width=64)
    n_wide = sum(p.numel() for p in wide.parameters())
    assert 11.0e6 < n_wide < 11.3e6  # the standard CIFAR PreAct-ResNet-18 has about 11.2 M
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    one = M.build("preact-resnet18", input_shape=(1, 28, 28), num_classes=10, width=4)
    assert one(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_small_vgg_stages_follow_the_vgg_pattern():
    net = M.build("small-vgg", input_shape=(1, 40, 101), num_classes=12)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 128, 128, 128]  # (1, 1, 2, 2)
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and net.mix_layers == ("block1", "block2", "block3", "block4")
    # 40 x 101 halves four times (floor): the last block's map is 2 x 6.
    assert net.block4(net.block3(net.block2(net.block1(torch.randn(1, 1, 40, 101))))).shape == (
        1, 128, 2, 6)
    assert isinstance(net.dropout, torch.nn.Dropout) and net.dropout.p == 0.2
    with pytest.raises(ConfigError, match=r"convs=\(1,\) must give .* one per entry"):
        M.build("small-vgg", input_shape=(1, 8, 8), num_classes=3, channels=(4, 8), convs=(1,))


@pytest.mark.needs("torch_geometric")
def test_gin_is_node_order_and_batch_invariant():
    net = build("gin").eval()
    graphs = dataset("solubility").test.graphs[:5]
    from torch_geometric.data import Batch, Data

    together = net(Batch.from_data_list(graphs))
    for k, g in enumerate(graphs):
        alone = net(Batch.from_data_list([g]))
        assert torch.allclose(together[k], alone[0], atol=1e-5)
        perm = torch.randperm(g.num_nodes, generator=torch.Generator().manual_seed(k))
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(g.num_nodes)
        shuffled = Data(x=g.x[perm], edge_index=inverse[g.edge_index], y=g.y)
        assert torch.allclose(net(Batch.from_data_list([shuffled]))[0], alone[0], atol=1e-5)


@pytest.mark.needs("torch_geometric")
def test_gin_pool_is_the_sum_of_node_embeddings_per_graph():
    net = build("gin").eval()
    batch = next(D.batches(dataset("solubility").val, batch_size=7, shuffle=False))[0]
    captured = {}
    net.pool.register_forward_hook(lambda _m, args, out: captured.update(args=args, out=out))
    net(batch)
    nodes = captured["args"][0]
    expected = torch.stack([nodes[batch.batch == g].sum(0) for g in range(batch.num_graphs)])
    assert torch.allclose(captured["out"], expected, atol=1e-5)
    assert net.mix_layers == ("pool",)


def test_build_errors():
    with pytest.raises(ConfigError, match=r"unknown model 'resnet'.*choose one of"):
        M.build("resnet", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ConfigError, match=r"does not take option\(s\) \['depth'\].*accepts"):
        M.build("mlp", input_shape=(4,), num_classes=3, depth=3)
    with pytest.raises(ConfigError, match=r"needs image inputs \(C, H, W\), got input_shape"):
        M.build("small-cnn", input_shape=(4,), num_classes=3)
    with pytest.raises(ConfigError, match=r"'gin' needs input_shape=\(num_node_features,\)"):
        M.build("gin", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(ConfigError, match=r"num_classes=1 must be an integer >= 2"):
        M.build("mlp", input_shape=(4,), num_classes=1)
    with pytest.raises(ConfigError, match=r"dropout=1.5 must lie in \[0, 1\)"):
        M.build("mlp", input_shape=(4,), num_classes=3, dropout=1.5)
    with pytest.raises(ConfigError, match=r"width=0 must be a positive integer"):
        M.build("preact-resnet18", input_shape=(3, 8, 8), num_classes=3, width=0)


def test_wrong_inputs_raise_input_error():
    mlp = M.build("mlp", input_shape=(4,), num_classes=3)
    with pytest.raises(InputError, match=r"MLP expects \(B, 4\) inputs.*got shape \(2, 5\)"):
        mlp(torch.randn(2, 5))
    cnn = M.build("small-cnn", input_shape=(1, 8, 8), num_classes=3)
    with pytest.raises(InputError, match=r"SmallCNN expects \(B, 1, H, W\).*\(2, 3, 8, 8\)"):
        cnn(torch.randn(2, 3, 8, 8))


@pytest.mark.needs("torch_geometric")
def test_gin_refuses_a_tensor_batch():
    gin = M.build("gin", input_shape=(5,), num_classes=3)
    with pytest.raises(InputError, match=r"GIN takes a PyG Batch or Data.*got Tensor"):
        gin(torch.randn(2, 5))
