"""Models whose forward takes a dict or a tuple (the shape of most NLP and multimodal models).

ERM and mixing at a hidden layer need nothing more; input mixing mixes the entries named in
``mix_keys``. Each objective is checked against the formula written out by hand here, or
against the tensor path on an equivalent tensor model (itself checked against references in
test_objectives.py and test_mixupe.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mixupe
from mixupe.errors import ConfigError, InputError

K, B = 3, 6
Y = torch.tensor([0, 1, 2, 1, 0, 2])
PERM = torch.tensor([3, 5, 0, 4, 1, 2])
LAM = 0.3


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class DictNet(nn.Module):
    """Float features plus integer token ids (which must never be mixed)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.body = nn.Sequential(nn.Linear(4, 6), nn.Tanh())
        self.head = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, K))
        g = gen(0)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.double()

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.body(batch["features"] + self.embed(batch["ids"]).mean(1))
        return self.head(h)


class TupleNet(DictNet):
    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        return super().forward({"features": batch[0], "ids": batch[1]})


def batch() -> dict[str, torch.Tensor]:
    return {"features": torch.randn(B, 4, generator=gen(1), dtype=torch.float64),
            "ids": torch.randint(0, 10, (B, 5), generator=gen(2))}


def mixed_ce(logits: torch.Tensor) -> torch.Tensor:
    return (LAM * F.cross_entropy(logits, Y, reduction="none")
            + (1 - LAM) * F.cross_entropy(logits, Y[PERM], reduction="none")).mean()


def grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters() if p.grad is not None]


def test_erm_takes_the_batch_as_the_model_does():
    net, x = DictNet(), batch()
    out = mixupe.ERM(num_classes=K)(net, x, Y)
    torch.testing.assert_close(out.loss, F.cross_entropy(net(x), Y))
    tup = (x["features"], x["ids"])
    torch.testing.assert_close(mixupe.ERM(num_classes=K)(TupleNet(), tup, Y).loss, out.loss)


def test_input_mixup_mixes_only_the_named_entries_and_copies_the_batch():
    net, x = DictNet(), batch()
    before = {k: v.clone() for k, v in x.items()}
    out = mixupe.Mixup(num_classes=K, mix_keys=["features"])(net, x, Y, lam=LAM, perm=PERM)
    by_hand = {"features": LAM * x["features"] + (1 - LAM) * x["features"][PERM],
               "ids": x["ids"]}
    torch.testing.assert_close(out.loss, mixed_ce(net(by_hand)))
    assert all(torch.equal(x[k], before[k]) for k in x)  # the caller's batch is untouched
    # a tuple batch names its entries by index
    tup = (x["features"], x["ids"])
    out_t = mixupe.Mixup(num_classes=K, mix_keys=[0])(TupleNet(), tup, Y, lam=LAM, perm=PERM)
    torch.testing.assert_close(out_t.loss, out.loss)


def test_cutmix_pastes_one_box_into_every_named_entry():
    x = {"image": torch.randn(B, 1, 4, 5, generator=gen(3), dtype=torch.float64),
         "depth": torch.randn(B, 4, 5, generator=gen(4), dtype=torch.float64)}
    seen: list[dict[str, torch.Tensor]] = []

    def model(b: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(b)
        return torch.zeros(B, K, dtype=torch.float64)

    cut = mixupe.CutMix(num_classes=K, mix_keys=["image", "depth"], axes=(-2, -1), seed=1)
    out = cut(model, x, Y, perm=PERM)
    box = out.mask[0]  # (4, 5)
    for key, view in (("image", box[None]), ("depth", box)):
        expected = torch.where(view, x[key][PERM], x[key])
        assert torch.equal(seen[0][key], expected)
    assert 0 < float(box.double().mean()) < 1


def test_manifold_mixing_at_a_hidden_layer_needs_no_names():
    net, x = DictNet(), batch()
    mm = mixupe.ManifoldMixup(layers=["body"], num_classes=K)
    out = mm(net, x, Y, lam=LAM, perm=PERM)
    h = net.body(x["features"] + net.embed(x["ids"]).mean(1))
    torch.testing.assert_close(out.loss, mixed_ce(net.head(LAM * h + (1 - LAM) * h[PERM])))
    # at "input" it mixes the named entries, as Mixup does
    at_input = mixupe.ManifoldMixup(layers=["input"], mix_keys=["features"], num_classes=K)
    ref = mixupe.Mixup(num_classes=K, mix_keys=["features"])(net, x, Y, lam=LAM, perm=PERM)
    torch.testing.assert_close(at_input(net, x, Y, lam=LAM, perm=PERM).loss, ref.loss)


class TensorNet(nn.Module):
    """The same function as DictNet with the token ids fixed: a tensor model for reference."""

    def __init__(self, net: DictNet, ids: torch.Tensor) -> None:
        super().__init__()
        self.net, self.ids = net, ids

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net({"features": features, "ids": self.ids})


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_mixupe_at_a_hidden_layer_equals_the_tensor_path(version):
    x = batch()
    objective = {}
    for kind in ("dict", "tensor"):
        objective[kind] = mixupe.MixupE(
            mixing=mixupe.ManifoldMixup(layers=["body"] if kind == "dict" else ["net.body"],
                                        num_classes=K),
            version=version, eta=0.5, threshold=0.0)
    d_net = DictNet()
    t_net = TensorNet(copy.deepcopy(d_net), x["ids"])
    d_out = objective["dict"](d_net, x, Y, lam=LAM, perm=PERM)
    t_out = objective["tensor"](t_net, x["features"], Y, lam=LAM, perm=PERM)
    d_out.loss.backward()
    t_out.loss.backward()
    torch.testing.assert_close(d_out.loss, t_out.loss, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(d_out.scores, t_out.scores, rtol=1e-12, atol=1e-14)
    for a, b in zip(grads(d_net), grads(t_net), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_mixupe_v3_with_input_mixing_of_named_entries_equals_the_formula():
    net, x = DictNet(), batch()
    obj = mixupe.MixupE(mixing=mixupe.Mixup(alpha=2.0, num_classes=K, mix_keys=["features"]),
                        version=3, eta=0.5, threshold=None, rescale=False)
    out = obj(net, x, Y, lam=LAM, perm=PERM)
    mixed = {"features": LAM * x["features"] + (1 - LAM) * x["features"][PERM], "ids": x["ids"]}
    f = net(x)
    score = ((F.one_hot(Y, K).double() - f.softmax(1)) * f).sum(1)
    expected = mixed_ce(net(mixed)) - 0.5 * (2.0 / 5.0) * score.sum() / B
    torch.testing.assert_close(out.loss, expected)


def test_what_cannot_work_is_refused_with_the_fix():
    net, x = DictNet(), batch()
    with pytest.raises(ConfigError, match=r"tensor entries \['features', 'ids'\]: name those to "
                                          r"mix, e.g. Mixup\(mix_keys=\['features'\]\)"):
        mixupe.Mixup(num_classes=K)(net, x, Y)
    with pytest.raises(ConfigError, match=r"mix_keys names 'pixels', which is not a tensor entry"):
        mixupe.Mixup(num_classes=K, mix_keys=["pixels"])(net, x, Y)
    with pytest.raises(ConfigError, match=r"the batch is a tensor: drop mix_keys"):
        mixupe.Mixup(num_classes=K, mix_keys=["a"])(nn.Linear(4, K).double(), x["features"], Y)
    with pytest.raises(ConfigError, match=r"mix_keys='features' is invalid"):
        mixupe.Mixup(num_classes=K, mix_keys="features")
    with pytest.raises(InputError, match=r"cannot mix inputs of dtype torch.int64"):
        mixupe.Mixup(num_classes=K, mix_keys=["ids"])(net, x, Y)
    with pytest.raises(InputError, match=r"entry 'ids' of the batch has shape \(5, 5\).*"
                                         r"\(6, \.\.\.\)"):
        mixupe.ERM(num_classes=K)(net, {**x, "ids": x["ids"][:5]}, Y)
    v1 = mixupe.MixupE(mixing=mixupe.Mixup(num_classes=K, mix_keys=["features"]), version=1)
    with pytest.raises(ConfigError, match=r"version 1 differentiates with respect to the mixed "
                                          r"input.*ManifoldMixup\(layers=\[\.\.\.\]\)"):
        v1(net, x, Y)
    fused = mixupe.MixupE(mixing=mixupe.ManifoldMixup(layers=["body"], num_classes=K),
                          clean_pass="fused")
    with pytest.raises(ConfigError, match=r"clean_pass='fused' needs tensor inputs.*dict"):
        fused(net, x, Y)
