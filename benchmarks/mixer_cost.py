"""Cost of a training step with each mixer of the family, relative to Mixup.

One step is ``zero_grad``, the objective's forward, ``backward`` and an SGD (Nesterov) step
(two forward/backward passes for SAM), on a small CNN (channels 16, 32) at 1x28x28 with
synthetic batches, on the CPU. Every method trains its own copy of the same initial model;
methods run round-robin after a warm-up and the median process CPU time per step (and the
median wall time) is reported with its ratio to Mixup's, measured in the same run, and the
ratio of mean CPU times (Puzzle Mix and Co-Mixup draw a grid size per step, so their step
times are spread out and the mean sets the run time). Objectives
run as the training engine runs them (``validate=False``, ``check_finite=False``).

Usage::

    nice .venv/bin/python benchmarks/mixer_cost.py --threads 1 --steps 15
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mixupe
from mixupe import models

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import machine_info, summarise, synthetic_batches

K = 10
SHAPE = (1, 28, 28)
FAST: dict[str, Any] = {"num_classes": K, "validate": False, "check_finite": False}


def objectives(seed: int) -> dict[str, tuple[Any, bool]]:
    """name -> (objective, uses SAM)."""
    def g() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    mix = {**FAST, "generator": g()}
    return {
        "Mixup": (mixupe.Mixup(alpha=1.0, **mix), False),
        "CutMix": (mixupe.CutMix(alpha=1.0, **FAST, generator=g()), False),
        "Mixup/CutMix switch": (mixupe.Switch(mixupe.Mixup(**FAST, generator=g()),
                                              mixupe.CutMix(**FAST)), False),
        "Manifold Mixup": (mixupe.ManifoldMixup(alpha=2.0, **FAST, generator=g()), False),
        "FMix": (mixupe.FMix(**FAST, generator=g()), False),
        "ResizeMix": (mixupe.ResizeMix(**FAST, generator=g()), False),
        "SaliencyMix": (mixupe.SaliencyMix(**FAST, generator=g()), False),
        "Puzzle Mix": (mixupe.PuzzleMix(grid_sizes=(2, 4, 7, 14), **FAST, generator=g()), False),
        "Puzzle Mix (adv_p=0.1)": (mixupe.PuzzleMix(grid_sizes=(2, 4, 7, 14), adv_p=0.1, **FAST,
                                                    generator=g()), False),
        "Co-Mixup": (mixupe.CoMixup(grid_sizes=(2, 4, 7, 14), **FAST, generator=g()), False),
        "AlignMix": (mixupe.AlignMix(layers=["block2"], **FAST, generator=g()), False),
        "RegMixup": (mixupe.RegMixup(eta=1.0, mixing=mixupe.Mixup(alpha=10.0, **FAST,
                                                                   generator=g()),
                                     validate=False, check_finite=False), False),
        "G-Mix baseline (Mixup + SAM)": (mixupe.Mixup(alpha=1.0, **FAST, generator=g()), True),
        "MixupE v3 + Mixup": (mixupe.MixupE(version=3, eta=1e-3, mixing=mixupe.Mixup(
            alpha=1.0, **FAST, generator=g()), validate=False, check_finite=False), False),
    }


def step(model: nn.Module, opt: torch.optim.Optimizer, objective: Any, x: Tensor,
         y: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    loss = objective(model, x, y).loss
    loss.backward()
    if isinstance(opt, mixupe.SAM):
        state = objective.generator.get_state()

        def closure() -> Tensor:
            objective.generator.set_state(state)
            opt.zero_grad(set_to_none=True)
            again = objective(model, x, y).loss
            again.backward()
            return again

        opt.step(closure)
    else:
        opt.step()


def run(*, steps: int, warmup: int, batch_size: int, seed: int,
        names: Sequence[str] | None) -> dict[str, Any]:
    torch.manual_seed(seed)
    base = models.build("small-cnn", input_shape=SHAPE, num_classes=K, channels=(16, 32))
    batches = synthetic_batches(SHAPE, K, batch_size, count=8, seed=seed,
                                device=torch.device("cpu"))
    contenders: list[dict[str, Any]] = []
    for name, (objective, sam) in objectives(seed).items():
        if names and name not in names and name != "Mixup":
            continue
        model = copy.deepcopy(base)
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9,
                                                     nesterov=True)
        if sam:
            opt = mixupe.SAM(opt, rho=0.05)
        contenders.append({"name": name, "model": model, "opt": opt, "objective": objective,
                           "cpu": [], "wall": []})
    for rnd in range(warmup + steps):
        x, y = batches[rnd % len(batches)]
        shift = rnd % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            c0, w0 = time.process_time(), time.perf_counter()
            step(c["model"], c["opt"], c["objective"], x, y)
            if rnd >= warmup:
                c["cpu"].append(1e3 * (time.process_time() - c0))
                c["wall"].append(1e3 * (time.perf_counter() - w0))
    ref = next(c for c in contenders if c["name"] == "Mixup")
    ref_cpu, ref_wall = summarise(ref["cpu"])["median"], summarise(ref["wall"])["median"]
    rows = []
    for c in contenders:
        cpu, wall = summarise(c["cpu"]), summarise(c["wall"])
        rows.append({"method": c["name"], "cpu_ms": cpu["median"], "cpu_iqr": cpu["iqr"],
                     "cpu_ratio": cpu["median"] / ref_cpu,
                     "cpu_mean_ratio": statistics.mean(c["cpu"]) / statistics.mean(ref["cpu"]),
                     "wall_ms": wall["median"], "wall_ratio": wall["median"] / ref_wall})
    return {"rows": rows, "batch_size": batch_size, "steps": steps, "warmup": warmup}


def table(result: dict[str, Any]) -> str:
    lines = ["| method | CPU ms / step (IQR) | CPU x Mixup | mean CPU x Mixup | wall ms / step "
             "| wall x Mixup |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['method']} | {r['cpu_ms']:.1f} ({r['cpu_iqr']:.1f}) | "
                     f"{r['cpu_ratio']:.2f} | {r['cpu_mean_ratio']:.2f} | {r['wall_ms']:.1f} | "
                     f"{r['wall_ratio']:.2f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15, help="timed steps per method")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per method")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", help="subset of method names (Mixup is added)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = run(steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
                 seed=args.seed, names=args.methods)
    result["machine"] = machine_info(args.threads, torch.device("cpu"))
    print(json.dumps(result["machine"]))
    print(f"small CNN (16, 32) at 1x28x28, batch {args.batch_size}, {args.steps} timed steps "
          "per method, medians")
    print(table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
