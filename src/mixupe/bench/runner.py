"""The resumable suite runner: skips complete runs, resumes partial ones, survives divergence.

Stages (see :mod:`mixupe.bench.selection` for the rule):
1. the selection runs of every cell whose arm follows no other, then the choice;
2. the selection runs of the cells that follow those (at the chosen values), then theirs,
   and so on down the chain of ``follow``;
3. the chosen point of every cell with its reported seeds.
Every stage decides what to do from the run directories alone, so killing the runner and
starting it again continues where it stopped.

Example:
    >>> from mixupe.bench.suites import load_suite
    >>> plan = plan_suite(load_suite("smoke"), overrides={"epochs": 1})
    >>> plan.name, len(plan.plans) > 0
    ('smoke@set:epochs=1', True)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.bench.executors import Executor, RunOutcome, RunTask, SequentialExecutor
from mixupe.bench.rundirs import RunReader
from mixupe.bench.selection import Selection, select_cell
from mixupe.bench.suites import ArmPlan, Suite, expand, manifest, variant_name, write_manifest
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, RunError

__all__ = ["PlannedRun", "SuiteOutcome", "SuitePlan", "cell_selections", "plan_suite",
           "run_suite"]

log = logging.getLogger("mixupe.bench")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a suite, with where it belongs."""

    dataset: str
    arm: str
    point: int
    seed: int
    config: TrainConfig

    def describe(self) -> str:
        """A short human-readable line: dataset / arm / point / seed."""
        return f"{self.dataset} / {self.arm} / point {self.point} / seed {self.seed}"


@dataclass
class SuitePlan:
    """A suite expanded: its (variant) name, the arm plans, the seeds and the manifest."""

    suite: Suite
    name: str
    plans: list[ArmPlan]
    selection_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    manifest: dict[str, Any]

    @property
    def total_runs(self) -> int:
        """Runs of a complete suite: selection runs of the cells that choose, then the
        reported seeds of each cell's chosen point."""
        total = 0
        for p in self.plans:
            n = _points_to_choose_among(p)
            if n > 1:
                total += n * len(self.selection_seeds)
                total += len([s for s in self.seeds if s not in self.selection_seeds])
            else:
                total += len(self.seeds)
        return total


def _points_to_choose_among(plan: ArmPlan) -> int:
    """Points a cell chooses among once the arms it follows have chosen."""
    if not plan.follow:
        return len(plan.points)
    followed = set(plan.follow)
    own = {tuple(sorted((k, repr(v)) for k, v in pt.params.items() if k not in followed))
           for pt in plan.points}
    return len(own)


@dataclass
class SuiteOutcome:
    """What a runner invocation did."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unselected: list[str] = field(default_factory=list)  # cells with no eligible grid point
    errors: list[tuple[str, str]] = field(default_factory=list)  # raised (parallel executors)


def plan_suite(suite: Suite, *, overrides: Mapping[str, Any] | None = None,
               seeds: Sequence[int] | None = None) -> SuitePlan:
    """Expand ``suite`` (validates every config); overrides and seeds give a variant name."""
    plans = expand(suite, overrides=overrides, seeds=seeds)
    name = variant_name(suite.name, overrides=overrides, seeds=seeds)
    run_seeds = tuple(seeds) if seeds is not None else suite.seeds
    return SuitePlan(suite=suite, name=name, plans=plans,
                     selection_seeds=suite.selection_seeds, seeds=run_seeds,
                     manifest=manifest(suite, plans, seeds=seeds, name=name))


def cell_selections(plans: Sequence[ArmPlan], *, seeds: Sequence[int],
                    selection_seeds: Sequence[int], status: Callable[[str], str],
                    val_acc: Callable[[str], float | None]
                    ) -> dict[tuple[str, str], Selection]:
    """The selection state of every cell, followed arms first (one rule for runner and report).

    ``plans`` may be :class:`ArmPlan` objects or manifest cells (dicts with "dataset", "arm",
    "points" (each with "params" and "runs") and optional "follow").
    """
    out: dict[tuple[str, str], Selection] = {}
    cells = [_as_cell(p) for p in plans]
    pending = list(cells)
    while pending:
        progressed = False
        for cell in list(pending):
            dataset, arm, params, runs, follow = cell
            parents = {label for label in follow.values()}
            if any((dataset, label) not in out for label in parents):
                continue
            fixed, waiting = {}, []
            for key, label in follow.items():
                parent = out[(dataset, label)]
                parent_params = next(c[2] for c in cells if c[0] == dataset and c[1] == label)
                if parent.chosen is None:
                    waiting.append(label)
                else:
                    fixed[key] = parent_params[parent.chosen].get(key)
            out[(dataset, arm)] = select_cell(
                params, runs, seeds=seeds, selection_seeds=selection_seeds, status=status,
                val_acc=val_acc, fixed={k: v for k, v in fixed.items() if v is not None},
                waiting_for=sorted(set(waiting)))
            pending.remove(cell)
            progressed = True
        if not progressed:  # an arm follows one that is not in the plans
            missing = sorted({label for c in pending for label in c[4].values()})
            raise ConfigError(f"cells follow arms {missing} that are not in the suite; fix the "
                              f"suite's follow tables")
    return out


def _as_cell(plan: ArmPlan | Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]],
                                                          list[dict[int, str]], dict[str, str]]:
    if isinstance(plan, ArmPlan):
        return (plan.dataset, plan.arm, [dict(p.params) for p in plan.points],
                [{s: c.run_name() for s, c in p.configs.items()} for p in plan.points],
                dict(plan.follow))
    return (plan["dataset"], plan["arm"], [dict(p.get("params", {})) for p in plan["points"]],
            [{int(s): n for s, n in p["runs"].items()} for p in plan["points"]],
            dict(plan.get("follow", {})))


def run_suite(suite: Suite, *, runs_root: str | Path = "runs",
              overrides: Mapping[str, Any] | None = None, seeds: Sequence[int] | None = None,
              progress: bool = False, datasets: Sequence[str] | None = None,
              arms: Sequence[str] | None = None,
              train_fn: Callable[..., Any] | None = None,
              executor: Executor | None = None, poll_s: float = 2.0) -> SuiteOutcome:
    """Run every missing run of ``suite`` under ``runs_root`` and return what happened.

    Complete runs are skipped, partial runs resumed, diverged runs (failed.json) are not
    retried; a run that diverges now is recorded and the suite goes on. ``datasets`` and
    ``arms`` restrict what runs now (by label); the manifest still covers the whole suite, so
    a large suite can be run in pieces. With ``overrides`` or ``seeds`` the suite runs under
    a variant name (its own manifest). ``train_fn`` replaces :func:`mixupe.engine.train`
    (same signature), e.g. to run under a profiler.

    ``executor`` (:func:`mixupe.bench.executors.make_executor`) decides where runs train;
    the default trains one at a time in this process. The runner submits each run as soon as
    the selection state makes it eligible (selection runs first, the shallowest ``follow``
    depth first), up to the executor's capacity, so one executor's order is the sequential
    order. A run another driver holds (its lock) is re-checked every ``poll_s`` seconds. With
    a parallel executor, a run that raises does not stop the others: once nothing is left,
    :class:`~mixupe.errors.RunError` names every such run (``.outcome`` holds the rest).
    """
    root = Path(runs_root)
    if executor is None:
        executor = SequentialExecutor(train_fn=train_fn)
    elif train_fn is not None:
        raise ConfigError("pass train_fn to make_executor(), not beside an executor")
    plan = plan_suite(suite, overrides=overrides, seeds=seeds)
    write_manifest(root, plan.manifest)
    driver = _Driver(plan, root, executor, progress=progress, poll_s=poll_s,
                     wanted=lambda d, a: (datasets is None or d in datasets)
                     and (arms is None or a in arms))
    try:
        driver.run()
    finally:
        driver.close()
    outcome = driver.outcome
    if outcome.errors:
        listed = "; ".join(f"{name}: {msg}" for name, msg in outcome.errors)
        raise RunError(f"{len(outcome.errors)} run(s) of suite {plan.name} failed (the others "
                       f"finished; rerun the suite to retry them): {listed}", outcome)
    return outcome


def _follow_depths(plans: Sequence[ArmPlan]) -> dict[tuple[str, str], int]:
    """How many ``follow`` links separate each cell from a cell that follows none."""
    follows = {(p.dataset, p.arm): [(p.dataset, a) for a in p.follow.values()] for p in plans}
    depth: dict[tuple[str, str], int] = {}

    def of(key: tuple[str, str], seen: frozenset[tuple[str, str]] = frozenset()) -> int:
        if key not in depth:
            parents = [k for k in follows.get(key, []) if k not in seen]
            depth[key] = 1 + max((of(k, seen | {key}) for k in parents), default=-1)
        return depth[key]

    for key in follows:
        of(key)
    return depth


class _Driver:
    """Submits a suite's eligible runs to an executor and records what comes back."""

    def __init__(self, plan: SuitePlan, root: Path, executor: Executor, *, progress: bool,
                 poll_s: float, wanted: Callable[[str, str], bool]) -> None:
        self.plan, self.root, self.executor = plan, root, executor
        self.progress, self.poll_s, self.wanted = progress, poll_s, wanted
        self.outcome = SuiteOutcome()
        self.record = RunReader(root)
        self.by_cell = {(p.dataset, p.arm): p for p in plan.plans}
        self.depth = _follow_depths(plan.plans)
        self.seen: set[str] = set()  # runs this invocation has skipped or finished
        self.running: dict[str, PlannedRun] = {}
        self.deferred: dict[str, float] = {}  # held by another driver: re-check after
        self.bar = None
        if progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=plan.total_runs, desc=f"suite {plan.name}", unit="run")

    def selections(self) -> dict[tuple[str, str], Selection]:
        return cell_selections(self.plan.plans, seeds=self.plan.seeds,
                               selection_seeds=self.plan.selection_seeds,
                               status=lambda n: self.record(n).status,
                               val_acc=lambda n: self.record(n).final("val").get("acc"))

    def candidates(self) -> list[PlannedRun]:
        """Eligible runs in the sequential order: selection runs (shallowest follow depth,
        then cell order), then the chosen points' reported seeds."""
        picks, reported = [], []
        for order, ((dataset, arm), sel) in enumerate(self.selections().items()):
            if sel.waiting_for or not self.wanted(dataset, arm):
                continue
            cell = self.by_cell[(dataset, arm)]
            for i in sel.eligible if sel.chose else ():
                for seed in sel.selection_seeds:
                    picks.append(((self.depth[(dataset, arm)], order),
                                  PlannedRun(dataset, arm, i, seed, cell.points[i].configs[seed])))
            if sel.chosen is not None:
                reported += [PlannedRun(dataset, arm, sel.chosen, seed,
                                        cell.points[sel.chosen].configs[seed])
                             for seed in sel.reported_seeds]
        picks.sort(key=lambda item: item[0])
        return [run for _, run in picks] + reported

    def next_run(self) -> PlannedRun | None:
        """The first candidate to submit, recording the complete and diverged ones passed."""
        now = time.monotonic()
        for run in self.candidates():
            name = run.config.run_name()
            if name in self.seen or name in self.running or self.deferred.get(name, 0) > now:
                continue
            status = self.record(name).status
            if status in ("complete", "failed"):
                self.finish(name, "skipped", run, "diverged earlier (failed.json); not retried"
                            if status == "failed" else "")
                continue
            return run
        return None

    def run(self) -> None:
        while True:
            while self.executor.running < self.executor.capacity:
                run = self.next_run()
                if run is None:
                    break
                self.submit(run)
            if self.executor.running:
                for result in self.executor.wait(timeout=None):
                    self.collect(result)
                continue
            if not self._deferred_pending():
                break
            time.sleep(max(0.0, min(self.deferred.values()) - time.monotonic()))
        self.report_unselected()

    def _deferred_pending(self) -> bool:
        """Whether runs held by another driver are still unfinished (re-read from disk)."""
        for name in self.deferred:
            self.record.forget(name)
        self.deferred = {n: due for n, due in self.deferred.items()
                         if self.record(n).status not in ("complete", "failed")}
        return bool(self.deferred)

    def submit(self, run: PlannedRun) -> None:
        name = run.config.run_name()
        status = self.record(name).status
        log.info("%s %s: %s", "resume" if status == "partial" else "train", run.describe(), name)
        self.deferred.pop(name, None)
        self.running[name] = run
        task = RunTask(config=run.config, runs_root=str(self.root.resolve()),
                       described=run.describe(),
                       progress=self.progress and self.executor.kind == "sequential")
        self.executor.submit(task)
        if self.executor.kind == "sequential":  # finished already: collect it now
            for result in self.executor.wait():
                self.collect(result)

    def collect(self, result: RunOutcome) -> None:
        run = self.running.pop(result.name)
        self.record.forget(result.name)
        if result.status == "busy":
            log.info("%s is being trained by another driver (%s); re-checking in %.0f s",
                     run.describe(), result.message, self.poll_s)
            self.deferred[result.name] = time.monotonic() + self.poll_s
            return
        kind = {"trained": "trained", "done": "skipped", "diverged": "diverged",
                "error": "error"}[result.status]
        self.finish(result.name, kind, run, result.message, result.val_acc)

    def finish(self, name: str, kind: str, run: PlannedRun, message: str = "",
               val_acc: float | None = None) -> None:
        self.seen.add(name)
        out = self.outcome
        if kind == "trained":
            out.trained.append(name)
        elif kind == "skipped":
            out.skipped.append(name)
            if message:
                out.failed.append((name, message))
            log.info("skip %s (%s): %s", run.describe(), "failed" if message else "complete",
                     name)
        elif kind == "diverged":
            out.failed.append((name, message))
            log.warning("run diverged, going on with the suite: %s: %s", name, message)
        else:
            out.errors.append((name, message))
            log.error("run failed, going on with the suite: %s", message)
        if self.bar is not None:
            self.bar.update(1)
            done = len(out.trained) + len(out.skipped)
            fails = len(out.failed) + len(out.errors)
            tail = (f" | {run.dataset}/{run.arm} s{run.seed} val acc {val_acc:.3f}"
                    if isinstance(val_acc, float) else "")
            self.bar.set_postfix_str(f"done {done}, failed {fails}, running "
                                     f"{self.executor.running}{tail}")

    def report_unselected(self) -> None:
        for (dataset, arm), sel in self.selections().items():
            if not self.wanted(dataset, arm) or sel.chosen is not None:
                continue
            self.outcome.unselected.append(f"{dataset} / {arm}")
            why = (f"waiting for {list(sel.waiting_for)} to choose" if sel.waiting_for
                   else "no grid point completed its selection runs")
            log.warning("%s / %s: %s; its reported seeds are not run", dataset, arm, why)

    def close(self) -> None:
        self.executor.close()
        if self.bar is not None:
            self.bar.close()
