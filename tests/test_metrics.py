"""Metrics against hand-computed values, plain per-sample loops and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from mixupe.engine.metrics import (
    accuracy,
    brier,
    calibration_bins,
    ece,
    ece_from_bins,
    fgsm_accuracy,
    fgsm_perturb,
    mean_ci,
    nll,
    paired_diff_ci,
)
from mixupe.errors import ConfigError, InputError


def _logits_from_probs(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).log()


# Four samples, two classes; confidences 0.9, 0.9, 0.55, 0.7.
PROBS = [[0.9, 0.1], [0.9, 0.1], [0.45, 0.55], [0.3, 0.7]]
LABELS = torch.tensor([0, 1, 1, 1])


def test_accuracy_nll_brier_by_hand() -> None:
    logits = _logits_from_probs(PROBS)
    assert accuracy(logits, LABELS) == pytest.approx(3 / 4)
    expected_nll = -(math.log(0.9) + math.log(0.1) + math.log(0.55) + math.log(0.7)) / 4
    assert nll(logits, LABELS) == pytest.approx(expected_nll, rel=1e-12)
    # sum over classes of squared error, mean over samples
    per_sample = [0.1**2 + 0.1**2, 0.9**2 + 0.9**2, 0.45**2 + 0.45**2, 0.3**2 + 0.3**2]
    assert brier(logits, LABELS) == pytest.approx(sum(per_sample) / 4, rel=1e-12)


def test_ece_by_hand_five_bins() -> None:
    logits = _logits_from_probs(PROBS)
    # bins of width 0.2: (0.8, 1]: two samples, conf 0.9, acc 1/2 -> 2/4 * 0.4
    # (0.6, 0.8]: conf 0.7, correct -> 1/4 * 0.3 ; (0.4, 0.6]: conf 0.55, correct -> 1/4 * 0.45
    expected = 0.5 * 0.4 + 0.25 * 0.3 + 0.25 * 0.45
    assert ece(logits, LABELS, n_bins=5) == pytest.approx(expected, rel=1e-12)


def _ece_loop(logits: torch.Tensor, y: torch.Tensor, n_bins: int) -> float:
    probs = logits.double().softmax(1).tolist()
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for p, label in zip(probs, y.tolist(), strict=True):
        conf = max(p)
        pred = p.index(conf)
        for b in range(n_bins):
            lo, hi = b / n_bins, (b + 1) / n_bins
            if (lo < conf <= hi) or (b == 0 and conf == 0):
                bins[b].append((conf, pred == label))
    total = 0.0
    for members in bins:
        if members:
            acc = sum(c for _, c in members) / len(members)
            conf = sum(p for p, _ in members) / len(members)
            total += len(members) / len(probs) * abs(acc - conf)
    return total


def test_ece_matches_plain_loop_and_bins_add_up() -> None:
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(200, 7, generator=g)
    y = torch.randint(0, 7, (200,), generator=g)
    assert ece(logits, y) == pytest.approx(_ece_loop(logits, y, 15), abs=1e-12)
    # sums over two shards equal the sums over the whole (how DDP all-reduces the ECE)
    halves = calibration_bins(logits[:77], y[:77]) + calibration_bins(logits[77:], y[77:])
    assert ece_from_bins(halves) == pytest.approx(ece(logits, y), abs=1e-12)


def test_metric_input_errors() -> None:
    logits = torch.zeros(3, 2)
    with pytest.raises(InputError, match=r"labels of shape \(2,\).*N=3"):
        accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(InputError, match=r"labels range over \[0, 5\].*\[0, 1\]"):
        nll(logits, torch.tensor([0, 1, 5]))
    with pytest.raises(InputError, match=r"dtype torch.float32.*torch.long"):
        brier(logits, torch.zeros(3))
    with pytest.raises(InputError, match=r"logits of shape \(3,\).*\(N, K\)"):
        ece(torch.zeros(3), torch.tensor([0, 1, 1]))
    with pytest.raises(ConfigError, match=r"n_bins=0.*positive integer"):
        ece(logits, torch.tensor([0, 1, 1]), n_bins=0)


# --------------------------------------------------------------------------- FGSM
def _linear_model(seed: int = 0) -> torch.nn.Linear:
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(3, 5, generator=g, dtype=torch.float64))
        model.bias.copy_(torch.randn(3, generator=g, dtype=torch.float64))
    return model


def test_fgsm_matches_closed_form_for_a_linear_model() -> None:
    model = _linear_model()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    eps = 0.3
    # d CE / d x = W^T (softmax(Wx + b) - onehot(y)), per sample
    with torch.no_grad():
        p = (x @ model.weight.T + model.bias).softmax(1)
        grad = (p - torch.nn.functional.one_hot(y, 3).double()) @ model.weight
        adv = x + eps * grad.sign()
        expected = (model(adv).argmax(1) == y).double().mean().item()
    assert torch.allclose(fgsm_perturb(model, x, y, eps), adv)
    assert fgsm_accuracy(model, x, y, eps) == pytest.approx(expected)
    assert model.weight.grad is None  # parameter gradients are left alone


def test_fgsm_at_most_clean_accuracy_and_equal_at_zero() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 5, generator=g, dtype=torch.float64)
    w_true = torch.randn(5, 3, generator=g, dtype=torch.float64)
    y = (x @ w_true).argmax(1)
    model = _linear_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        clean = accuracy(model(x), y)
    assert clean > 0.8
    assert fgsm_accuracy(model, x, y, 0.0) == clean
    for eps in (0.01, 0.1, 0.5):
        assert fgsm_accuracy(model, x, y, eps) <= clean
    assert fgsm_accuracy(model, x, y, 0.5) < clean


@pytest.mark.needs("torch_geometric")
def test_fgsm_perturbs_graph_node_features() -> None:
    from torch_geometric.data import Batch, Data
    from torch_geometric.nn import global_mean_pool

    class PoolLinear(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = _linear_model(4)

        def forward(self, b: Batch) -> torch.Tensor:
            return self.lin(global_mean_pool(b.x, b.batch))

    g = torch.Generator().manual_seed(5)
    graphs = [Data(x=torch.randn(n, 5, generator=g, dtype=torch.float64),
                   edge_index=torch.zeros(2, 0, dtype=torch.long)) for n in (3, 4, 2)]
    batch = Batch.from_data_list(graphs)
    y = torch.tensor([0, 2, 1])
    model = PoolLinear()
    adv = fgsm_perturb(model, batch, y, 0.2)
    # closed form: every node of graph i moves by eps * sign(W^T (p_i - Y_i))
    with torch.no_grad():
        p = model(batch).softmax(1)
        direction = ((p - torch.nn.functional.one_hot(y, 3).double()) @ model.lin.weight).sign()
    assert torch.allclose(adv.x, batch.x + 0.2 * direction[batch.batch])
    assert torch.equal(batch.x, Batch.from_data_list(graphs).x)  # input left unmodified


def _one_hot_graphs(g: torch.Generator, continuous: bool):
    """Three graphs whose node features are one-hot columns (a flag too), plus one
    continuous column when asked."""
    from torch_geometric.data import Batch, Data

    graphs = []
    for n in (3, 4, 2):
        cols = [torch.nn.functional.one_hot(torch.randint(0, 3, (n,), generator=g), 3).double(),
                torch.randint(0, 2, (n, 1), generator=g).double()]
        if continuous:
            cols.append(torch.randn(n, 1, generator=g, dtype=torch.float64))
        graphs.append(Data(x=torch.cat(cols, 1), edge_index=torch.zeros(2, 0, dtype=torch.long)))
    return Batch.from_data_list(graphs)


class _PoolLinear(torch.nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(features)
        self.lin = torch.nn.Linear(features, 3).double()
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(3, features, generator=g, dtype=torch.float64))

    def forward(self, b) -> torch.Tensor:
        from torch_geometric.nn import global_mean_pool

        return self.lin(global_mean_pool(b.x, b.batch))


@pytest.mark.needs("torch_geometric")
def test_fgsm_leaves_one_hot_graph_features_alone() -> None:
    """Issue 23.13: the attack moved one-hot molecule features off {0, 1} by eps. Only the
    continuous column moves, by eps times the sign of its gradient (closed form)."""
    g = torch.Generator().manual_seed(6)
    batch, y = _one_hot_graphs(g, continuous=True), torch.tensor([0, 2, 1])
    model = _PoolLinear(5)
    adv = fgsm_perturb(model, batch, y, 0.2)
    with torch.no_grad():
        p = model(batch).softmax(1)
        direction = ((p - torch.nn.functional.one_hot(y, 3).double()) @ model.lin.weight).sign()
    expected = batch.x.clone()
    expected[:, 4] += 0.2 * direction[batch.batch, 4]
    assert torch.allclose(adv.x, expected)


@pytest.mark.needs("torch_geometric")
def test_fgsm_on_all_one_hot_graph_features_is_refused_and_not_reported() -> None:
    from mixupe.engine.trainer import evaluate

    g = torch.Generator().manual_seed(7)
    batch, y = _one_hot_graphs(g, continuous=False), torch.tensor([0, 2, 1])
    model = _PoolLinear(4)
    with pytest.raises(InputError, match=r"FGSM is undefined.*0/1 \(one-hot"):
        fgsm_perturb(model, batch, y, 0.1)

    from mixupe.data.splits import GraphSplit

    graphs = batch.to_data_list()
    for graph, label in zip(graphs, y, strict=True):
        graph.y = label.reshape(1)
    split = GraphSplit(graphs)
    with pytest.warns(UserWarning, match=r"FGSM accuracy is not reported.*one-hot"):
        out = evaluate(model, split, fgsm_eps=0.1)
    assert "fgsm_acc" not in out and "acc" in out


def test_fgsm_errors() -> None:
    model = _linear_model()
    x, y = torch.zeros(2, 5, dtype=torch.float64), torch.tensor([0, 1])
    with pytest.raises(ConfigError, match=r"eps=-0.1.*>= 0"):
        fgsm_accuracy(model, x, y, -0.1)
    with pytest.raises(InputError, match=r"dtype torch.int64.*float"):
        fgsm_perturb(model, torch.zeros(2, 5, dtype=torch.long), y, 0.1)
    with pytest.raises(InputError, match=r"tensor batch or a graph batch.*got list"):
        fgsm_perturb(model, [1, 2], y, 0.1)


# --------------------------------------------------------------------------- intervals
def test_mean_ci_against_t_table() -> None:
    # t_{0.975} from printed tables: df=2 -> 4.303, df=4 -> 2.776
    mean, half = mean_ci([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.3027 * 1.0 / math.sqrt(3), rel=1e-4)
    values = [0.70, 0.72, 0.71, 0.69, 0.73]
    sd = math.sqrt(sum((v - 0.71) ** 2 for v in values) / 4)
    mean, half = mean_ci(values)
    assert mean == pytest.approx(0.71)
    assert half == pytest.approx(2.7764 * sd / math.sqrt(5), rel=1e-4)
    # 90 %: t_{0.95, 2} = 2.920
    assert mean_ci([1.0, 2.0, 3.0], level=0.9)[1] == pytest.approx(2.9200 / math.sqrt(3),
                                                                   rel=1e-4)
    one = mean_ci([0.5])
    assert one[0] == 0.5 and math.isnan(one[1])


def test_paired_diff_ci_by_hand() -> None:
    a = [0.80, 0.83, 0.85]
    b = [0.78, 0.80, 0.81]
    # differences 0.02, 0.03, 0.04: mean 0.03, sd 0.01
    mean, half = paired_diff_ci(a, b)
    assert mean == pytest.approx(0.03)
    assert half == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    # pairing matters: the unpaired intervals are much wider
    assert half < mean_ci(a)[1]


def test_interval_errors() -> None:
    with pytest.raises(InputError, match=r"no values.*at least one"):
        mean_ci([])
    with pytest.raises(InputError, match=r"non-finite values \[1.0, nan\].*drop failed runs"):
        mean_ci([1.0, float("nan")])
    with pytest.raises(ConfigError, match=r"level=1.5.*between 0 and 1"):
        mean_ci([1.0, 2.0], level=1.5)
    with pytest.raises(InputError, match=r"got 2 and 3.*pair the runs by seed"):
        paired_diff_ci([1.0, 2.0], [1.0, 2.0, 3.0])
