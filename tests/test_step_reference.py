"""The step-time benchmark: its plain version-3 reference, statistics, memory probe and cells.

The reference is checked against a per-sample loop written from docs/METHOD.md, and MixupE
version 3 against the reference (loss and gradients, float64), so the benchmark compares
two implementations of the same step.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mixupe

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "step_time.py"
_spec = importlib.util.spec_from_file_location("step_time", _PATH)
assert _spec is not None and _spec.loader is not None
st = importlib.util.module_from_spec(_spec)
sys.modules["step_time"] = st
_spec.loader.exec_module(st)

K = 4
B = 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, K)).double()


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
        nn.Linear(3 * 4 * 4, K),
    ).double()


def _data(shape: tuple[int, ...], seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = _gen(seed)
    x = 2.0 * torch.randn(B, *shape, generator=g, dtype=torch.float64)
    y = torch.randint(0, K, (B,), generator=g)
    return x, y


PERM = torch.tensor([3, 0, 6, 1, 7, 2, 5, 4])


def _loop_v3(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, lam: float, eta: float,
             threshold: float, alpha: float) -> torch.Tensor:
    """Version 3 from docs/METHOD.md with one sample at a time (eval-free nets only)."""
    c = alpha / (2 * alpha + 1)
    mix_terms, reg_terms = [], []
    for i in range(B):
        j = int(PERM[i])
        f_mix = net((lam * x[i] + (1 - lam) * x[j]).unsqueeze(0))[0]
        ce_i = torch.logsumexp(f_mix, 0) - f_mix[int(y[i])]
        ce_j = torch.logsumexp(f_mix, 0) - f_mix[int(y[j])]
        mix_terms.append(lam * ce_i + (1 - lam) * ce_j)
        f = net(x[i].unsqueeze(0))[0]
        p = torch.softmax(f, 0)
        s = f[int(y[i])] - (p * f).sum()  # (Y - p)^T f
        if float(s.detach()) < threshold:
            reg_terms.append(s)
    l_mix = torch.stack(mix_terms).mean()
    reg = torch.stack(reg_terms).sum() / B if reg_terms else torch.zeros((), dtype=x.dtype)
    total = l_mix - eta * c * reg
    return abs(float(l_mix)) / abs(float(total)) * total


def _grads(net: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in net.parameters()]


def _clean_scores(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        f = copy.deepcopy(net)(x)
        return ((nn.functional.one_hot(y, K) - f.softmax(1)) * f).sum(1)


@pytest.mark.parametrize("quantile", [0.3, 0.7, None])
def test_reference_matches_a_per_sample_loop(quantile: float | None) -> None:
    net = _mlp()
    x, y = _data((5,))
    scores = _clean_scores(net, x, y)
    threshold = -50.0 if quantile is None else float(scores.quantile(quantile))
    n_sel = int((scores < threshold).sum())
    assert (n_sel == 0) if quantile is None else (0 < n_sel < B)
    net_loop = copy.deepcopy(net)
    ref = st.reference_v3_loss(net, x, y, num_classes=K, lam=0.3, perm=PERM, eta=0.7,
                               threshold=threshold)
    loop = _loop_v3(net_loop, x, y, lam=0.3, eta=0.7, threshold=threshold, alpha=st.ALPHA)
    torch.testing.assert_close(ref, loop, rtol=1e-12, atol=1e-12)
    # the rescaled loss always equals +-|L_mix|: only the gradient sees the regulariser
    ref.backward()
    loop.backward()
    for g_ref, g_loop in zip(_grads(net), _grads(net_loop), strict=True):
        torch.testing.assert_close(g_ref, g_loop, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("make_net, shape", [(_mlp, (5,)), (_cnn, (1, 4, 4))])
@pytest.mark.parametrize("lam", [0.15, 0.8])
def test_mixupe_v3_equals_the_reference(make_net, shape, lam: float) -> None:
    base = make_net()
    x, y = _data(shape)
    scores = _clean_scores(base, x, y)  # a threshold that splits the batch
    tau = float(scores.median())
    n_sel = int((scores < tau).sum())
    assert 0 < n_sel < B

    net_ref, net_obj = copy.deepcopy(base), copy.deepcopy(base)
    ref = st.reference_v3_loss(net_ref, x, y, num_classes=K, lam=lam, perm=PERM, eta=0.9,
                               threshold=tau)
    ref.backward()
    objective = mixupe.MixupE(version=3, eta=0.9, threshold=tau, alpha=st.ALPHA, num_classes=K)
    out = objective(net_obj, x, y, lam=lam, perm=PERM)
    out.loss.backward()
    torch.testing.assert_close(out.loss.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    for g_obj, g_ref in zip(_grads(net_obj), _grads(net_ref), strict=True):
        torch.testing.assert_close(g_obj, g_ref, rtol=1e-10, atol=1e-12)
    assert out.stats["selected_fraction"] == pytest.approx(n_sel / B)


def test_reference_callable_is_seeded() -> None:
    x, y = _data((5,))
    a = st.ReferenceV3(num_classes=K, seed=3)(_mlp(), x, y)
    b = st.ReferenceV3(num_classes=K, seed=3)(_mlp(), x, y)
    c = st.ReferenceV3(num_classes=K, seed=4)(_mlp(), x, y)
    assert float(a) == float(b)
    assert float(a) != float(c)


def test_summarise_against_numpy() -> None:
    values = list(np.random.default_rng(0).gamma(2.0, 3.0, size=37))
    s = st.summarise(values)
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    assert s["median"] == pytest.approx(med)
    assert s["iqr"] == pytest.approx(q3 - q1)
    assert s["n"] == 37


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc")
def test_peak_memory_sees_a_known_allocation() -> None:
    size_mib = 96

    def run() -> None:
        t = torch.ones(size_mib * 2**20 // 4)  # float32, written, so resident
        del t

    peak = st.peak_memory_mib(run, torch.device("cpu"))
    if peak is None:
        pytest.skip("/proc/self/clear_refs is not writable here")
    assert size_mib * 0.9 <= peak <= size_mib * 1.5


def test_bench_cell_rows_and_ratios() -> None:
    torch.set_num_threads(1)
    names = ["erm", "v3-separate", "v1-separate-jvp", "v2-fused-vjp"]
    specs = st.select_specs(names)
    assert {s.name for s in specs} == {*names, "mixup", "reference-v3"}
    cell = st.bench_cell("mlp", 8, steps=3, warmup=1, mem_steps=1, specs=specs,
                         device=torch.device("cpu"), seed=0)
    rows = {r["method"]: r for r in cell["rows"]}
    assert set(rows) == {s.name for s in specs}
    assert rows["mixup"]["vs_mixup"] == pytest.approx(1.0)
    assert rows["reference-v3"]["vs_reference"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["steps"] == 3 and r["finite"]
        assert r["q1_ms"] <= r["median_ms"] <= r["q3_ms"]
        assert r["vs_mixup"] == pytest.approx(r["median_ms"] / rows["mixup"]["median_ms"])
        assert math.isfinite(r["cpu_vs_mixup"]) and math.isfinite(r["cpu_vs_reference"])
        assert r["cpu_vs_mixup"] == pytest.approx(r["cpu_median_ms"]
                                                  / rows["mixup"]["cpu_median_ms"])
    text = st.format_cell(cell)
    assert "target v3-separate vs_mixup <= 2.0" in text


def test_target_lines_verdicts() -> None:
    def row(method: str, vs_mixup: float, vs_ref: float) -> dict:
        return {"method": method, "vs_mixup": vs_mixup, "vs_reference": vs_ref,
                "cpu_vs_mixup": vs_mixup / 2, "cpu_vs_reference": None}

    cell = {"model": "mlp", "rows": [row("v3-separate", 2.1, 0.9), row("v3-fused", 1.2, 0.5),
                                     row("v1-separate-vjp", 3.0, 2.0)]}
    lines = "\n".join(st.target_lines(cell))
    assert "v3-separate vs_mixup <= 2.0: wall 2.10 MISSED, cpu 1.05 met" in lines
    assert "v3-separate vs_reference <= 1.0: wall 0.90 met\n" in lines
    assert "v3-fused vs_mixup <= 1.3: wall 1.20 met, cpu 0.60 met" in lines
    assert "v1-separate-vjp vs_mixup <= 3.0: wall 3.00 met" in lines
    cnn = {"model": "small-cnn", "rows": cell["rows"]}
    assert not any("v3-fused" in line for line in st.target_lines(cnn))


def test_bad_options_exit_with_the_fix() -> None:
    with pytest.raises(SystemExit):
        st.parse_args(["--steps", "1"])
    with pytest.raises(SystemExit, match="unknown method"):
        st.select_specs(["v9-separate"])


def test_ratio_matrix_lists_every_method_and_cell() -> None:
    def cell(model: str, b: int, ratio: float) -> dict:
        rows = [{"method": "mixup", "vs_mixup": 1.0, "cpu_vs_mixup": 1.0},
                {"method": "v3-fused", "vs_mixup": ratio, "cpu_vs_mixup": ratio / 2}]
        return {"model": model, "batch_size": b, "rows": rows}

    text = st.ratio_matrix([cell("mlp", 64, 1.5), cell("preact-resnet18", 16, 1.25)])
    lines = text.splitlines()
    assert lines[0].split() == ["ratio", "to", "mixup", "mlp@64", "resnet@16"]
    assert lines[2].split() == ["v3-fused", "1.50/0.75", "1.25/0.62"]
