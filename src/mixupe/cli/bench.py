"""``mixupe bench``: run a suite's missing runs, then print its table and write the report."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mixupe.cli.common import EXIT_OK, CliError, err, out, print_report_files, progress_wanted
from mixupe.cli.options import Formatter, add_flags, add_pairs, add_runs_root, key_values
from mixupe.errors import ConfigError, RunError


def _builtin_suites() -> list[str]:
    from mixupe.bench.suites import builtin_suites  # imported late: the CLI starts fast

    return builtin_suites()


def add_parser(sub: Any) -> None:
    """The ``bench`` subcommand."""
    bench = sub.add_parser(
        "bench", help="run a benchmark suite (resumable), then print its table and write plots",
        formatter_class=Formatter,
        description="Run every missing run of a suite (complete runs are skipped, partial runs "
                    "resumed, diverged runs reported and not retried), then print the suite's "
                    "table and write report.md and plots. Interrupt and rerun to continue.")
    bench.add_argument("suite", metavar="SUITE",
                       help=f"built-in suite ({', '.join(_builtin_suites())}) or a suite TOML file")
    add_runs_root(bench, "directory that holds run directories")
    bench.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                       help="replace the suite's seeds")
    add_pairs(bench, "--set", "overrides", "FIELD=VALUE",
              "override a TrainConfig field for every run (repeatable), e.g. --set epochs=2")
    add_pairs(bench, "--restrict", "restrict", "KEY=V1[,V2]",
              "keep only these values of a grid key (repeatable): an ablation reported as its "
              "own suite NAME@KEY=V that reuses the runs, e.g. --restrict alpha=0.2 compares "
              "every arm at the same alpha", parse=key_values)
    for kind in ("datasets", "arms"):
        bench.add_argument(f"--{kind}", nargs="+", metavar="LABEL",
                           help=f"run only these {kind} of the suite (the report covers all)")
    add_flags(bench, {
        "--dry-run": "validate the suite and list its runs with their status; train nothing"})
    bench.add_argument("--out", type=Path,
                       help="report directory (default: RUNS_ROOT/report)")
    add_flags(bench, {"--no-report": "skip the table and plots",
                      "--no-progress": "no progress bars"})
    _add_executor_options(bench)


def _add_executor_options(bench: argparse.ArgumentParser) -> None:
    where = bench.add_argument_group(
        "where runs train", "the runner decides what runs next; the executor where (see "
        "docs/SCALE-OUT.md). Every run holds a lock in its directory and logs to its run.log, "
        "so several drivers may share a runs root")
    where.add_argument("--executor", choices=["sequential", "processes", "ray"],
                       help="sequential: one run at a time here (default); processes: --jobs "
                            "worker processes here; ray: Ray tasks on a local instance or the "
                            "cluster at --address / RAY_ADDRESS (needs mixupe[ray])")
    where.add_argument("--jobs", type=int, metavar="N",
                       help="runs in flight at once (processes: worker processes, default 1; "
                            "ray: default what the cluster fits); --jobs N > 1 alone means "
                            "--executor processes")
    where.add_argument("--threads-per-run", type=int, metavar="T",
                       help="torch threads of each run (sequential: default torch's; "
                            "processes: default CPUs // jobs)")
    where.add_argument("--address", metavar="HOST:PORT",
                       help="ray: the cluster to join (default RAY_ADDRESS, else a new local "
                            "instance)")
    where.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                       help="ray: CPUs each run asks for (also its torch threads)")
    where.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                       help="ray: GPUs each run asks for; a fraction shares a GPU (e.g. 0.25: "
                            "four runs per GPU)")
    where.add_argument("--max-retries", type=int, default=3, metavar="R",
                       help="processes and ray: times a run whose worker died is retried (it "
                            "resumes from its checkpoint; diverged runs are never retried)")


def _dry_run_suite(plan: Any, runs_root: Path) -> None:
    """List every run the suite would make now, with its status, and what waits on a choice."""
    from mixupe.bench.rundirs import RunReader
    from mixupe.bench.runner import cell_selections

    out(f"suite {plan.name}: {len(plan.plans)} dataset x arm cells, {plan.total_runs} runs "
        f"when complete (reported seeds {list(plan.seeds)}, selection seeds "
        f"{list(plan.selection_seeds)} where a cell chooses among grid points)")

    record = RunReader(runs_root)  # run directories first, then the root's packs, as the runner

    def status(name: str) -> str:
        return record(name).status

    state = cell_selections(plan.plans, seeds=plan.seeds, selection_seeds=plan.selection_seeds,
                            status=status,
                            val_acc=lambda n: record(n).final("val").get("acc"))
    for cell in plan.plans:
        sel = state[(cell.dataset, cell.arm)]
        where = f"{cell.dataset} / {cell.arm}"
        if sel.waiting_for:
            out(f"  {where}: waits for {list(sel.waiting_for)} to choose")
            continue
        runs = [(i, s) for i in (sel.eligible if sel.chose else ()) for s in sel.selection_seeds]
        if sel.chosen is not None:
            runs += [(sel.chosen, s) for s in sel.reported_seeds]
        for i, seed in runs:
            name = cell.points[i].configs[seed].run_name()
            out(f"  [{status(name):8s}] {where} / point {i} / seed {seed}: {name}")
        if sel.chosen is None:
            out(f"  {where}: + {len(sel.reported_seeds)} runs of the chosen point (seeds "
                f"{list(sel.reported_seeds)}) once selected")


def _check_labels(args: argparse.Namespace, suite: Any) -> None:
    """CliError for a ``--datasets`` or ``--arms`` label the suite does not have."""
    for kind, wanted, have in (("--datasets", args.datasets, [d.label for d in suite.datasets]),
                               ("--arms", args.arms, [a.label for a in suite.arms])):
        bad = sorted(set(wanted or []) - set(have))
        if bad:
            raise CliError(f"{kind} {bad} not in suite {suite.name!r}; choose from {have}")


def run(args: argparse.Namespace) -> int:
    """Run the suite (or list its runs with ``--dry-run``), then report on it."""
    from mixupe.bench.report import write_report
    from mixupe.bench.runner import plan_suite, run_suite
    from mixupe.bench.suites import load_suite, restrict_grid

    suite = load_suite(args.suite)
    if args.restrict:
        suite = restrict_grid(suite, dict(args.restrict))
    overrides = dict(args.overrides)
    plan = plan_suite(suite, overrides=overrides, seeds=args.seeds)
    _check_labels(args, suite)
    if args.dry_run:
        _dry_run_suite(plan, args.runs_root)
        return EXIT_OK
    progress = progress_wanted(args.no_progress)
    executor = _bench_executor(args)
    try:
        outcome = run_suite(suite, runs_root=args.runs_root, overrides=overrides,
                            seeds=args.seeds, progress=progress, datasets=args.datasets,
                            arms=args.arms, executor=executor)
    except RunError as exc:
        if exc.outcome is None:
            raise
        _bench_summary(suite.name, exc.outcome)
        raise
    _bench_summary(suite.name, outcome)
    if args.no_report:
        return EXIT_OK
    print_report_files(write_report(args.runs_root, suite=plan.name, out=args.out))
    return EXIT_OK


def _bench_executor(args: argparse.Namespace) -> Any:
    from mixupe.bench.executors import make_executor

    kind = args.executor or ("processes" if (args.jobs or 1) > 1 else "sequential")
    try:
        return make_executor(kind, jobs=args.jobs, threads=args.threads_per_run,
                             runs_root=args.runs_root, address=args.address,
                             cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                             max_retries=args.max_retries)
    except ConfigError as exc:  # name the flags, not the Python keywords
        raise CliError(str(exc).replace("cpus_per_run", "--cpus-per-run")
                       .replace("gpus_per_run", "--gpus-per-run")
                       .replace("max_retries", "--max-retries").replace("'address'",
                                                                         "'--address'")) from exc


def _bench_summary(name: str, outcome: Any) -> None:
    err(f"suite {name}: {len(outcome.trained)} trained, {len(outcome.skipped)} already "
        f"done, {len(outcome.failed)} diverged, {len(outcome.errors)} failed")
    for run_name, reason in outcome.failed:
        err(f"  diverged: {run_name}: {reason}")
    for run_name, reason in outcome.errors:
        err(f"  failed: {run_name}: {reason}")
