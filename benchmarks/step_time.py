"""Step time of ERM, Mixup and every MixupE variant, against a plain version-3 reference.

MixupE version 3 also runs with its clean pass on a random part of the batch
(``clean_fraction`` 0.125, 0.25 and 0.5: rows ``v3-cf0.125`` ...), and with ``--compile``
the Mixup, version-3 separate / fused / ``clean_fraction=0.25`` steps also run through
``torch.compile`` (rows ``...+compile``): lambda, the pairing and the subset are drawn
eagerly from the objective's generator, as the objective itself draws them, and the rest of
the objective's forward (model included) is compiled. The compile time (the first call) is
printed per cell.

One training step is ``zero_grad``, the objective's forward, ``backward`` and an SGD
(Nesterov) ``step``. Every method trains its own copy of the same initial model on the same
synthetic batches (fixed seed). Methods are interleaved round-robin (the order rotates each
round), warmed up, and the median over many steps is reported with the inter-quartile
range, the ratio to Mixup's median and the ratio to the reference's median, all measured in
the same run. Each step's process CPU time is recorded too ("cpu ms", "cpu/mixup",
"cpu/ref": medians of CPU time and their ratios), which is far less disturbed than wall
time when other processes share the cores (a preempted step keeps its CPU time but not its
wall time); with ``--threads 1`` it is the step's compute time. On CUDA it is the host's
time to issue the step (Python, dispatch, kernel launches), read before the closing
``torch.cuda.synchronize``, whose wait spins and would count as CPU time; a step that waits
for the device inside (a host read) includes that wait. The objectives run as the
training engine runs them (``validate=False``, ``check_finite=False``: no host
synchronisation in the step).

The reference is what a user would write from the table in docs/METHOD.md for version 3:
separate forward passes, one-hot labels with ``scatter_``, lambda from a numpy Beta draw and
the selected samples picked by index with ``nonzero``.

Peak memory: on CPU, the peak resident set size (``VmHWM`` of ``/proc/self/status``, reset
through ``/proc/self/clear_refs`` after ``malloc_trim``) during a few extra steps of the
method, minus the resident set size just before them. It counts every transient allocation
of the step (activations, saved tensors, gradients) that the allocator took from the
operating system; memory that the allocator reused from its own free lists is not counted,
so it is a lower bound on the step's working set. On CUDA, ``max_memory_allocated`` minus
the memory allocated before the steps.

Usage::

    .venv/bin/python benchmarks/step_time.py --threads 1 --out step_time.json
    .venv/bin/python benchmarks/step_time.py --models mlp --batch-sizes 64 --mlp-steps 50
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import functools
import gc
import json
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mixupe
from mixupe import models

ALPHA = 2.0  # the published MixupE configuration: alpha 2, eta 1e-3, tau 1.0
ETA = 1e-3
THRESHOLD = 1.0
CLEAN_FRACTIONS = (0.125, 0.25, 0.5)
COMPILED = ("mixup", "v3-separate", "v3-fused", "v3-cf0.25")  # with --compile

# name -> (input shape of one sample, number of classes, model options)
MODEL_SPECS: dict[str, tuple[tuple[int, ...], int, dict[str, Any]]] = {
    "mlp": ((16,), 26, {}),
    "small-cnn": ((1, 28, 28), 10, {}),
    "preact-resnet18": ((1, 28, 28), 10, {"width": 16}),
}

LossFn = Callable[[nn.Module, Tensor, Tensor], Tensor]


# --------------------------------------------------------------------- the plain reference
def reference_v3_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    lam: float,
    perm: Tensor,
    alpha: float = ALPHA,
    eta: float = ETA,
    threshold: float = THRESHOLD,
) -> Tensor:
    """MixupE version 3 written straight from docs/METHOD.md's table (released sign, rescaled).

    Example:
        >>> net = torch.nn.Linear(3, 4)
        >>> x, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 0])
        >>> loss = reference_v3_loss(net, x, y, num_classes=4, lam=0.3, perm=torch.arange(5))
        >>> loss.shape
        torch.Size([])
    """
    batch = x.shape[0]
    onehot = torch.zeros(batch, num_classes, dtype=x.dtype, device=x.device)
    onehot.scatter_(1, y.unsqueeze(1), 1.0)
    x_mix = lam * x + (1 - lam) * x[perm]
    target_mix = lam * onehot + (1 - lam) * onehot[perm]
    logits_mix = model(x_mix)
    loss_mix = -(target_mix * F.log_softmax(logits_mix, dim=1)).sum(1).mean()
    logits = model(x)
    probs = F.softmax(logits, dim=1)
    score = ((onehot - probs) * logits).sum(1)
    chosen = (score.detach() < threshold).nonzero().squeeze(1)
    c = alpha / (2 * alpha + 1)
    loss = loss_mix - eta * c * score[chosen].sum() / batch
    return (loss_mix.detach().abs() / loss.detach().abs()) * loss


class ReferenceV3:
    """The reference as a training-loop callable: draws lambda (numpy) and the permutation."""

    def __init__(self, *, num_classes: int, seed: int = 0) -> None:
        self.num_classes = num_classes
        self.rng = np.random.default_rng(seed)
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lam = float(self.rng.beta(ALPHA, ALPHA))
        perm = torch.randperm(x.shape[0], generator=self.generator).to(x.device)
        return reference_v3_loss(model, x, y, num_classes=self.num_classes, lam=lam, perm=perm)


# --------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    """A benchmarked method: its table name and the MixupE options (None: not MixupE)."""

    name: str
    kind: str  # "erm", "mixup", "mixupe" or "reference"
    options: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False


def method_specs(*, compiled: bool = False) -> list[MethodSpec]:
    """ERM, Mixup, MixupE v1/v2 (separate/fused x vjp/jvp), v3/v4 (separate/fused), v3 on
    part of the batch, the reference, and with ``compiled`` the compiled variants."""
    specs = [MethodSpec("erm", "erm"), MethodSpec("mixup", "mixup")]
    for version in (1, 2, 3, 4):
        for clean_pass in ("separate", "fused"):
            derivatives = ("vjp", "jvp") if version in (1, 2) else ("vjp",)
            for derivative in derivatives:
                name = f"v{version}-{clean_pass}" + (f"-{derivative}" if version < 3 else "")
                options = {"version": version, "clean_pass": clean_pass, "derivative": derivative}
                specs.append(MethodSpec(name, "mixupe", options))
    for fraction in CLEAN_FRACTIONS:
        specs.append(MethodSpec(f"v3-cf{fraction:g}", "mixupe",
                                {"version": 3, "clean_fraction": fraction}))
    specs.append(MethodSpec("reference-v3", "reference"))
    if compiled:
        by_name = {s.name: s for s in specs}
        specs += [MethodSpec(f"{name}+compile", by_name[name].kind, by_name[name].options, True)
                  for name in COMPILED]
    return specs


class CompiledStep:
    """An objective's loss with everything after its random draws compiled.

    Lambda, the pairing and (for ``clean_fraction < 1``) the clean subset are drawn from the
    objective's generator in the order the objective draws them, outside the compiled
    function (a generator argument breaks the graph); the objective's forward and its loss,
    the model included, run through ``torch.compile``.
    """

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.mixer = getattr(objective, "mixing", objective)
        self.step = torch.compile(self._loss)

    def _loss(self, model: nn.Module, x: Tensor, y: Tensor, lam: Tensor, perm: Tensor,
              subset: Tensor | None) -> Tensor:
        extra = {} if subset is None else {"clean_subset": subset}
        return self.objective(model, x, y, lam=lam, perm=perm, **extra).loss

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        g, batch = self.objective.generator, x.shape[0]
        lam = mixupe.functional.sample_lambda(self.mixer.alpha, generator=g, dtype=x.dtype)
        perm = mixupe.functional.sample_permutation(batch, generator=g)
        subset = None
        size = self.objective.clean_size(batch) if hasattr(self.objective, "clean_size") else batch
        if size < batch:
            subset = torch.randperm(batch, generator=g, device=g.device)[:size]
        return self.step(model, x, y, lam.to(x.device), perm.to(x.device),
                         None if subset is None else subset.to(x.device))


def make_loss_fn(spec: MethodSpec, *, num_classes: int, data_mean: Tensor, seed: int) -> LossFn:
    """The per-step loss of one method, configured as the training engine configures it."""
    fast = {"num_classes": num_classes, "seed": seed, "validate": False, "check_finite": False}
    if spec.kind == "reference":
        return ReferenceV3(num_classes=num_classes, seed=seed)
    if spec.kind == "erm":
        objective: Any = mixupe.ERM(**fast)
    elif spec.kind == "mixup":
        objective = mixupe.Mixup(alpha=ALPHA, **fast)
    else:
        objective = mixupe.MixupE(
            mixing=mixupe.Mixup(alpha=ALPHA, **fast),
            eta=ETA,
            threshold=THRESHOLD,
            validate=False,
            check_finite=False,
            **spec.options,
        )
        if spec.options["version"] in (1, 2):
            objective.set_data_mean(data_mean)
    if spec.compiled:
        return CompiledStep(objective)

    def loss_fn(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return objective(model, x, y).loss

    return loss_fn


# --------------------------------------------------------------------- timing
def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: LossFn,
               x: Tensor, y: Tensor) -> Tensor:
    """zero_grad, the objective's forward, backward and the optimiser step; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def summarise(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and IQR of step times in milliseconds.

    Example:
        >>> summarise([1.0, 2.0, 3.0, 4.0, 5.0])["median"]
        3.0
    """
    q1, _, q3 = statistics.quantiles(times_ms, n=4, method="inclusive")
    return {"median": statistics.median(times_ms), "q1": q1, "q3": q3, "iqr": q3 - q1,
            "n": float(len(times_ms))}


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


_LIBC: Any = None


def _trim_heap() -> None:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


def _status_kib(field_name: str) -> int:
    with open("/proc/self/status") as fh:
        match = re.search(rf"^{field_name}:\s+(\d+) kB", fh.read(), re.MULTILINE)
    return int(match.group(1)) if match else -1


def peak_memory_mib(run: Callable[[], None], device: torch.device) -> float | None:
    """Peak extra memory (MiB) while ``run`` executes; None where it cannot be measured."""
    gc.collect()
    if device.type == "cuda":
        _synchronise(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        run()
        _synchronise(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    try:
        _trim_heap()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current resident set size
    except OSError:
        return None
    base = _status_kib("VmRSS")
    run()
    peak = _status_kib("VmHWM")
    return max(peak - base, 0) / 1024 if base >= 0 and peak >= 0 else None


def time_step(step: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float, float]:
    """Run one step between device synchronisations: its value, wall ms and CPU ms.

    The CPU time stops before the closing synchronisation (on CUDA that wait spins)."""
    _synchronise(device)
    start, start_cpu = time.perf_counter(), time.process_time()
    value = step()
    cpu_ms = (time.process_time() - start_cpu) * 1e3
    _synchronise(device)
    return value, (time.perf_counter() - start) * 1e3, cpu_ms


@dataclass
class Contender:
    """One method's model, optimiser and loss for one (model, batch size) cell."""

    spec: MethodSpec
    model: nn.Module
    optimizer: torch.optim.Optimizer
    loss_fn: LossFn
    times_ms: list[float] = field(default_factory=list)
    cpu_ms: list[float] = field(default_factory=list)
    last_loss: Tensor | None = None
    first_s: float | None = None  # the first step (for compiled methods: the compile time)


def synthetic_batches(input_shape: tuple[int, ...], num_classes: int, batch_size: int, *,
                      count: int, seed: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """``count`` fixed random batches (standard-normal inputs, uniform labels)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        x = torch.randn(batch_size, *input_shape, generator=g)
        y = torch.randint(0, num_classes, (batch_size,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def bench_cell(model_name: str, batch_size: int, *, steps: int, warmup: int, mem_steps: int,
               specs: Sequence[MethodSpec], device: torch.device, seed: int) -> dict[str, Any]:
    """Time every method on one model and batch size; returns the cell's rows."""
    input_shape, num_classes, options = MODEL_SPECS[model_name]
    if any(spec.compiled for spec in specs):
        # Compiled code is cached per function; the cells' models differ, so start afresh
        # (else the recompile limit would quietly send later cells back to eager mode).
        torch.compiler.reset()
    torch.manual_seed(seed)  # only the initial weights; the step itself uses no global RNG
    base_model = models.build(model_name, input_shape=input_shape, num_classes=num_classes,
                              **options).to(device)
    batches = synthetic_batches(input_shape, num_classes, batch_size, count=4, seed=seed + 1,
                                device=device)
    data_mean = torch.cat([b[0] for b in batches]).mean(0)
    contenders = []
    for i, spec in enumerate(specs):
        net = copy.deepcopy(base_model).train()
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                              weight_decay=1e-4)
        loss_fn = make_loss_fn(spec, num_classes=num_classes, data_mean=data_mean,
                               seed=seed + 100 + i)
        contenders.append(Contender(spec, net, opt, loss_fn))

    for rnd in range(warmup + steps):
        x, y = batches[rnd % len(batches)]
        shift = rnd % len(contenders)
        for con in contenders[shift:] + contenders[:shift]:
            con.last_loss, wall_ms, cpu_ms = time_step(
                functools.partial(train_step, con.model, con.optimizer, con.loss_fn, x, y), device)
            if rnd == 0:
                con.first_s = wall_ms / 1e3
            if rnd >= warmup:
                con.times_ms.append(wall_ms)
                con.cpu_ms.append(cpu_ms)

    memory = {}
    for con in contenders:
        def run(con: Contender = con) -> None:
            for k in range(mem_steps):
                x, y = batches[k % len(batches)]
                train_step(con.model, con.optimizer, con.loss_fn, x, y)
        memory[con.spec.name] = peak_memory_mib(run, device) if mem_steps > 0 else None

    summaries = {con.spec.name: summarise(con.times_ms) for con in contenders}
    cpu = {con.spec.name: statistics.median(con.cpu_ms) for con in contenders}
    mixup_ms = summaries.get("mixup", {}).get("median")
    ref_ms = summaries.get("reference-v3", {}).get("median")
    rows = []
    for con in contenders:
        s = summaries[con.spec.name]
        finite = all(bool(torch.isfinite(p).all()) for p in con.model.parameters())
        rows.append({
            "method": con.spec.name,
            "median_ms": s["median"],
            "q1_ms": s["q1"],
            "q3_ms": s["q3"],
            "iqr_ms": s["iqr"],
            "steps": int(s["n"]),
            "vs_mixup": s["median"] / mixup_ms if mixup_ms else None,
            "vs_reference": s["median"] / ref_ms if ref_ms else None,
            "cpu_median_ms": cpu[con.spec.name],
            "cpu_vs_mixup": cpu[con.spec.name] / cpu["mixup"] if cpu.get("mixup") else None,
            "cpu_vs_reference": (cpu[con.spec.name] / cpu["reference-v3"]
                                 if cpu.get("reference-v3") else None),
            "peak_mib": memory[con.spec.name],
            "finite": finite,
            "first_step_s": con.first_s,
        })
    return {"model": model_name, "batch_size": batch_size, "rows": rows}


# --------------------------------------------------------------------- checks and targets
def check_reference(model_name: str, *, device: torch.device, seed: int) -> float:
    """Largest difference of the loss and the gradients of the reference and MixupE v3.

    Computed in float64 for two lambdas; the rescaled loss always equals ``+-|L_mix|``, so
    the gradients are what shows the regulariser.
    """
    input_shape, num_classes, options = MODEL_SPECS[model_name]
    torch.manual_seed(seed)
    net = models.build(model_name, input_shape=input_shape, num_classes=num_classes,
                       **options).to(device=device, dtype=torch.float64).train()
    (x, y), = synthetic_batches(input_shape, num_classes, 16, count=1, seed=seed, device=device)
    x = x.double()
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(seed)).to(device)
    objective = mixupe.MixupE(version=3, eta=0.5, threshold=THRESHOLD, alpha=ALPHA,
                              num_classes=num_classes)
    worst = 0.0
    for lam in (0.2, 0.7):
        net_ref, net_obj = copy.deepcopy(net), copy.deepcopy(net)
        ref = reference_v3_loss(net_ref, x, y, num_classes=num_classes, lam=lam, perm=perm,
                                eta=0.5)
        ours = objective(net_obj, x, y, lam=lam, perm=perm).loss
        ref.backward()
        ours.backward()
        worst = max(worst, abs(float(ref.detach()) - float(ours.detach())))
        for p_ref, p_obj in zip(net_ref.parameters(), net_obj.parameters(), strict=True):
            worst = max(worst, float((p_ref.grad - p_obj.grad).abs().max()))
    return worst


TARGETS = (
    # (method, compared with, limit, models it applies to or None for all)
    ("v3-separate", "vs_mixup", 2.0, None),
    ("v3-separate", "vs_reference", 1.0, None),
    ("v3-fused", "vs_mixup", 1.3, ("mlp",)),
    ("v1-separate-vjp", "vs_mixup", 3.0, None),
    ("v1-separate-jvp", "vs_mixup", 3.0, None),
    ("v3-cf0.25", "vs_mixup", 1.35, ("mlp", "small-cnn")),
    ("v3-separate+compile", "vs_reference", 1.0, ("mlp",)),
    ("v3-fused+compile", "vs_mixup", 1.3, ("mlp",)),
)


def target_lines(cell: dict[str, Any]) -> list[str]:
    """One line per target that applies to the cell: wall-time and CPU-time verdicts."""
    by_name = {r["method"]: r for r in cell["rows"]}
    lines = []
    for method, column, limit, applies in TARGETS:
        if (applies is not None and cell["model"] not in applies) or method not in by_name:
            continue
        parts = []
        for clock, key in (("wall", column), ("cpu", f"cpu_{column}")):
            value = by_name[method].get(key)
            if value is not None:
                parts.append(f"{clock} {value:.2f} {'met' if value <= limit else 'MISSED'}")
        if parts:
            lines.append(f"  target {method} {column} <= {limit}: " + ", ".join(parts))
    return lines


def format_cell(cell: dict[str, Any]) -> str:
    """The per-cell table: median, IQR, ratios and peak memory."""
    head = (f"\n## {cell['model']}, batch {cell['batch_size']}\n"
            f"{'method':<18}{'median ms':>10}{'IQR ms':>9}{'/mixup':>8}{'/ref':>7}"
            f"{'cpu ms':>9}{'cpu/mixup':>10}{'cpu/ref':>8}{'peak MiB':>10}")
    lines = [head]
    for r in cell["rows"]:
        mem = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.1f}"
        flag = "" if r["finite"] else "  (non-finite weights)"
        lines.append(f"{r['method']:<18}{r['median_ms']:>10.2f}{r['iqr_ms']:>9.2f}"
                     f"{r['vs_mixup']:>8.2f}{r['vs_reference']:>7.2f}{r['cpu_median_ms']:>9.2f}"
                     f"{r['cpu_vs_mixup']:>10.2f}{r['cpu_vs_reference']:>8.2f}{mem:>10}{flag}")
    lines.extend(target_lines(cell))
    compiled = [r for r in cell["rows"] if r["method"].endswith("+compile")]
    if compiled:
        lines.append("  compile time (first step, s): " + ", ".join(
            f"{r['method']} {r['first_step_s']:.1f}" for r in compiled))
    return "\n".join(lines)


def ratio_matrix(cells: Sequence[dict[str, Any]]) -> str:
    """Every method's ratio to Mixup in every cell, "wall/cpu", one line per method."""
    heads = [f"{c['model'].replace('preact-resnet18', 'resnet')}@{c['batch_size']}"
             for c in cells]
    lines = [f"{'ratio to mixup':<18}" + "".join(f"{h:>14}" for h in heads)]
    for name in [r["method"] for r in cells[0]["rows"]] if cells else []:
        values = []
        for cell in cells:
            row = next((r for r in cell["rows"] if r["method"] == name), None)
            values.append("-" if row is None else
                          f"{row['vs_mixup']:.2f}/{row['cpu_vs_mixup']:.2f}")
        lines.append(f"{name:<18}" + "".join(f"{v:>14}" for v in values))
    return "\n".join(lines)


def machine_info(threads: int, device: torch.device) -> dict[str, Any]:
    """Cores, torch version, threads and load, printed with the results."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "device": str(device),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "time_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(MODEL_SPECS), choices=list(MODEL_SPECS))
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[64, 256],
                   help="batch sizes of the MLP")
    p.add_argument("--cnn-batch-sizes", nargs="+", type=int, default=[64, 128])
    p.add_argument("--resnet-batch-sizes", nargs="+", type=int, default=[16, 32],
                   help="batch sizes of preact-resnet18 (slower on a CPU)")
    p.add_argument("--mlp-steps", type=int, default=100, help="timed steps per method (MLP)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per method (small CNN)")
    p.add_argument("--resnet-steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds before timing")
    p.add_argument("--mem-steps", type=int, default=2, help="steps per method for peak memory")
    p.add_argument("--methods", nargs="+", default=None,
                   help="subset of methods (always adds mixup and reference-v3)")
    p.add_argument("--compile", action="store_true",
                   help=f"also time {', '.join(COMPILED)} through torch.compile "
                        "(rows NAME+compile; needs a C++ compiler on CPU)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    if min(args.steps, args.mlp_steps, args.resnet_steps) < 2:
        p.error(f"--steps {args.steps} / --mlp-steps {args.mlp_steps} / --resnet-steps "
                f"{args.resnet_steps}: need at least 2 timed steps for quartiles; use e.g. "
                "--steps 20")
    if any(b < 2 for b in args.batch_sizes + args.cnn_batch_sizes + args.resnet_batch_sizes):
        p.error("batch sizes must be >= 2 (mixing pairs samples); use e.g. --batch-sizes 64 256")
    return args


def select_specs(names: Sequence[str] | None, *, compiled: bool = False) -> list[MethodSpec]:
    """All methods, or the named ones plus the two every ratio needs."""
    specs = method_specs(compiled=compiled)
    if names is None:
        return specs
    known = {s.name for s in specs}
    unknown = sorted(set(names) - known - {s.name for s in method_specs(compiled=True)})
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}: choose from {sorted(known)}")
    wanted = set(names) | {"mixup", "reference-v3"}
    wanted |= {f"{name}+compile" for name in wanted}  # present with --compile
    return [s for s in specs if s.name in wanted]


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    specs = select_specs(args.methods, compiled=args.compile)
    info = machine_info(args.threads, device)
    print(" ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    checks = {m: check_reference(m, device=device, seed=args.seed) for m in args.models}
    print("reference vs MixupE v3, largest |difference| of loss and gradients (float64): "
          + ", ".join(f"{m} {d:.1e}" for m, d in checks.items()), flush=True)
    cells = []
    plan = {"mlp": (args.batch_sizes, args.mlp_steps),
            "small-cnn": (args.cnn_batch_sizes, args.steps),
            "preact-resnet18": (args.resnet_batch_sizes, args.resnet_steps)}
    for model_name in args.models:
        sizes, steps = plan[model_name]
        for batch_size in sizes:
            cell = bench_cell(model_name, batch_size, steps=steps,
                              warmup=args.warmup, mem_steps=args.mem_steps, specs=specs,
                              device=device, seed=args.seed)
            cells.append(cell)
            print(format_cell(cell), flush=True)
    print("\n" + ratio_matrix(cells))
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"\nload average at start {info['load_average']}, at end {info['load_average_end']}")
    result = {"machine": info, "argv": sys.argv[1:] if argv is None else list(argv),
              "reference_check": checks, "cells": cells}
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=1)
    return result


if __name__ == "__main__":
    main()
