"""What evaluation costs relative to training: a suite epoch against the training-only epoch.

The engine records, per epoch, the wall time (``time_s``) and the part spent evaluating
(``eval_s``), and per run the end-of-run evaluation (``final_eval_s``: test with the FGSM
attack and reliability bins, and the best-validation epoch's test metrics). This script prints,
per dataset and method, the training-only seconds per epoch, the per-epoch validation share,
and the ratio (training + validation + end-of-run evaluation spread over the epochs) / training.

Two ways to get the records:

    python benchmarks/eval_cost.py --runs runs/study                # from a suite's run logs
    python benchmarks/eval_cost.py --suite regime --epochs 3        # train short runs now
    python benchmarks/eval_cost.py --suite converged --datasets letter-2k --val-every 2

The second trains every dataset of a suite for ``--epochs`` epochs with ERM, Mixup and MixupE
v3 (one seed, 1 thread) once with ``full_eval="end"`` (validation every epoch, test and FGSM at
the end) and once with ``"each-epoch"`` (the first study's rule), in a temporary directory,
and amortises the end-of-run evaluation over the suite's own epoch count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import torch


def _rows_from_runs(root: Path) -> dict[tuple[str, str, str], list[tuple[float, float, float,
                                                                          int]]]:
    """(dataset, method, full_eval) -> [(train s, val s, final eval s, epochs)] per run."""
    out: dict[tuple[str, str, str], list[tuple[float, float, float, int]]] = defaultdict(list)
    for result_path in sorted(root.rglob("result.json")):
        result = json.loads(result_path.read_text())
        if result.get("failed") or "final_eval_s" not in result:
            continue
        config = json.loads((result_path.parent / "config.json").read_text())["config"]
        records = [json.loads(x) for x in
                   (result_path.parent / "metrics.jsonl").read_text().splitlines()]
        train_s = sum(r["time_s"] - r.get("eval_s", 0.0) for r in records)
        val_s = sum(r.get("eval_s", 0.0) for r in records)
        method = config["method"] + (f"-v{config['version']}" if config["method"] == "mixupe"
                                     else "")
        policy = config.get("full_eval", "each-epoch")
        if config.get("val_every", 1) != 1:
            policy += f", val every {config['val_every']}"
        out[(config["dataset"], method, policy)].append(
            (train_s, val_s, result["final_eval_s"], len(records)))
    return out


def _print(rows: dict, amortise_over: dict[str, int] | None = None) -> None:
    print("| dataset | method | eval | train s/epoch | val share | end-of-run eval s | "
          "suite epoch / training epoch |")
    print("|---|---|---|---|---|---|---|")
    for (dataset, method, policy), runs in sorted(rows.items()):
        train = statistics.median(t / n for t, _, _, n in runs)
        val = statistics.median(v / t for t, v, _, _ in runs)
        final = statistics.median(f for _, _, f, _ in runs)
        epochs = (amortise_over or {}).get(dataset) or statistics.median(n for *_, n in runs)
        ratio = 1.0 + val + final / (train * epochs)
        print(f"| {dataset} | {method} | {policy} | {train:.3f} | {val:.1%} | {final:.2f} | "
              f"{ratio:.2f}x (over {epochs:g} epochs) |")


def _measure(suite_name: str, epochs: int, datasets: list[str] | None,
             val_every: int = 1) -> None:
    from mixupe.bench.suites import expand, load_suite
    from mixupe.engine import train

    torch.set_num_threads(1)
    suite = load_suite(suite_name)
    rows: dict = defaultdict(list)
    amortise = {}
    root = Path(tempfile.mkdtemp())
    for plan in expand(suite):
        if plan.arm not in ("ERM", "Mixup") or (datasets and plan.dataset not in datasets):
            continue
        base = plan.points[0].configs[suite.seeds[0]]
        amortise[base.dataset] = base.epochs
        variants = [base] if plan.arm == "ERM" else [
            base, dataclasses.replace(base, method="mixupe", version=3, eta=0.1)]
        for cfg in variants:
            policies = [("end", 1), ("each-epoch", 1)]
            if val_every > 1:
                policies.append(("end", val_every))
            for policy, every in policies:
                run = dataclasses.replace(cfg, epochs=epochs, full_eval=policy, val_every=every,
                                          warmup_epochs=min(cfg.warmup_epochs, epochs))
                train(run, runs_root=root, progress=False)
    rows = _rows_from_runs(root)
    _print(rows, amortise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, help="read the run logs under this runs root")
    parser.add_argument("--suite", default="regime", help="suite whose settings to measure")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each measured run")
    parser.add_argument("--datasets", nargs="+", help="only these datasets (by label)")
    parser.add_argument("--val-every", type=int, default=1,
                        help="also measure validating every N epochs (full_eval='end')")
    args = parser.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    if args.runs is not None:
        _print(_rows_from_runs(args.runs))
    else:
        _measure(args.suite, args.epochs, args.datasets, args.val_every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
