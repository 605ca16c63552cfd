"""Suite throughput: the same short suite trained sequentially, with local worker processes
and with Ray, each in a fresh runs root; prints wall time, runs per minute and speed-ups.

The suite is letter (2000 rows, the MLP) with ERM, Mixup at three alphas and MixupE v3 over
``--seeds`` seeds (12 runs at the default 3 seeds: Mixup's selection runs on seed 100 choose
alpha, then its reported seeds), ``--epochs`` epochs each. Modes:

- ``sequential``: one run at a time in this process with ``--cores`` torch threads (the
  runner before executors existed, with every core given to the one run);
- ``processes``: ``--jobs N`` worker processes, ``--cores // N`` threads each;
- ``ray``: a local Ray instance with ``--cores`` CPUs, one CPU and one thread per run.

Every mode's runs are checked against the sequential mode's at equal threads when
``--check`` is given (the same runs with one thread, compared without timing fields).

    .venv/bin/python benchmarks/suite_throughput.py --cores 2 --jobs 2 --out throughput.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from mixupe.bench.executors import make_executor
from mixupe.bench.rundirs import find_runs
from mixupe.bench.runner import run_suite
from mixupe.bench.suites import parse_suite

TIMING = {"time_s", "eval_s", "wall_time_s", "final_eval_s"}


def suite(seeds: int, epochs: int):
    return parse_suite({
        "name": "throughput", "seeds": list(range(seeds)), "selection_seeds": [100],
        "defaults": {"epochs": epochs, "batch_size": 64, "lr": 0.05},
        "datasets": [{"label": "letter-2k", "name": "letter", "model": "mlp",
                      "model_options": {"hidden": [512, 512]},
                      "data_options": {"subset": 2000}}],
        "arms": [{"label": "ERM", "method": "erm"},
                 {"label": "Mixup", "method": "mixup", "grid": {"alpha": [0.2, 0.5, 1.0]}},
                 {"label": "MixupE v3", "method": "mixupe", "version": 3, "alpha": 1.0,
                  "eta": 0.1, "threshold": 1.0}],
    })


def strip(value):
    if isinstance(value, dict):
        return {k: strip(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [strip(v) for v in value]
    return value


def snapshot(root: Path) -> dict:
    out = {}
    for name in find_runs(root):
        lines = (root / name / "metrics.jsonl").read_text().splitlines()
        out[name] = (strip(json.loads((root / name / "result.json").read_text())),
                     [strip(json.loads(line)) for line in lines])
    return out


def timed(mode: str, root: Path, args: argparse.Namespace, threads: int | None = None) -> dict:
    if mode == "sequential":
        ex = make_executor("sequential", threads=threads or args.cores)
    elif mode == "processes":
        ex = make_executor("processes", jobs=args.jobs,
                           threads=threads or max(1, args.cores // args.jobs))
    else:
        import ray

        ray.init(num_cpus=args.cores, include_dashboard=False, log_to_driver=False)
        ex = make_executor("ray", runs_root=root, cpus_per_run=1)
    start = time.perf_counter()
    try:
        outcome = run_suite(suite(args.seeds, args.epochs), runs_root=root, executor=ex)
    finally:
        if mode == "ray":
            import ray

            ray.shutdown()
    wall = time.perf_counter() - start
    n = len(outcome.trained)
    return {"mode": mode, "runs": n, "wall_s": round(wall, 2),
            "runs_per_min": round(60 * n / wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--modes", nargs="+", default=["sequential", "processes", "ray"])
    parser.add_argument("--check", action="store_true",
                        help="also check each mode's runs equal one-thread sequential runs")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="throughput-"))
    try:
        for mode in args.modes:
            rows.append(timed(mode, scratch / mode, args))
            print(json.dumps(rows[-1]), flush=True)
        base = next((r["wall_s"] for r in rows if r["mode"] == "sequential"), None)
        for r in rows:
            r["speedup_vs_sequential"] = round(base / r["wall_s"], 2) if base else None
        if args.check:
            ref = scratch / "sequential-1-thread"
            timed("sequential", ref, args, threads=1)
            same = {m: snapshot(scratch / m) == snapshot(ref) for m in args.modes
                    if m != "sequential"}
            print("bit-identical to one-thread sequential runs:", same)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'mode':12s} {'runs':>5s} {'wall s':>8s} {'runs/min':>9s} {'x seq':>6s}")
    for r in rows:
        print(f"{r['mode']:12s} {r['runs']:5d} {r['wall_s']:8.1f} {r['runs_per_min']:9.2f} "
              f"{r['speedup_vs_sequential'] or float('nan'):6.2f}")
    if args.out:
        args.out.write_text(json.dumps({"cores": args.cores, "jobs": args.jobs,
                                        "load_avg": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
