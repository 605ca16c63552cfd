"""The resumable suite runner: skips complete runs, resumes partial ones, survives divergence.

Two phases per suite (see :mod:`mixupe.bench.selection`):
1. every grid point of every dataset x arm runs with the suite's selection seeds;
2. the point with the best mean validation accuracy runs with the remaining seeds.
Both phases decide what to do from the run directories alone, so killing the runner and
starting it again continues where it stopped.

Example:
    >>> from mixupe.bench.suites import load_suite
    >>> plan = plan_suite(load_suite("smoke"), overrides={"epochs": 1})
    >>> len(plan.phase1) > 0
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.bench.rundirs import read_run
from mixupe.bench.selection import choose_point
from mixupe.bench.suites import (
    ArmPlan,
    Suite,
    effective_selection_seeds,
    expand,
    manifest,
    write_manifest,
)
from mixupe.engine.config import TrainConfig
from mixupe.errors import NonFiniteLossError

__all__ = ["PlannedRun", "SuiteOutcome", "SuitePlan", "plan_suite", "run_suite"]

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
    """A suite expanded: the arm plans, the phase-1 runs and the manifest to write."""

    suite: Suite
    plans: list[ArmPlan]
    selection_seeds: tuple[int, ...]
    seeds: tuple[int, ...]
    phase1: list[PlannedRun]
    manifest: dict[str, Any]

    @property
    def total_runs(self) -> int:
        """Runs of a complete suite: phase 1 plus the other seeds of each chosen point."""
        rest = len([s for s in self.seeds if s not in self.selection_seeds])
        return len(self.phase1) + rest * len(self.plans)


@dataclass
class SuiteOutcome:
    """What a runner invocation did."""

    trained: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unselected: list[str] = field(default_factory=list)  # cells with no eligible grid point


def plan_suite(suite: Suite, *, overrides: Mapping[str, Any] | None = None,
               seeds: Sequence[int] | None = None) -> SuitePlan:
    """Expand ``suite`` and list its phase-1 runs (validates every config)."""
    plans = expand(suite, overrides=overrides, seeds=seeds)
    selection = effective_selection_seeds(suite, seeds)
    phase1 = [PlannedRun(p.dataset, p.arm, i, s, point.configs[s])
              for p in plans for i, point in enumerate(p.points) for s in selection]
    return SuitePlan(suite=suite, plans=plans, selection_seeds=selection,
                     seeds=tuple(seeds) if seeds is not None else suite.seeds, phase1=phase1,
                     manifest=manifest(suite, plans, seeds=seeds))


def run_status(runs_root: str | Path, config: TrainConfig) -> str:
    """"complete", "failed", "partial" or "missing" for the run of ``config``."""
    return read_run(runs_root, config.run_name()).status


def _choose(runs_root: Path, plan: ArmPlan, selection: Sequence[int]) -> int | None:
    if len(plan.points) == 1:
        return 0  # nothing to select: every seed runs whatever the selection runs did
    scores: list[list[float] | None] = []
    for point in plan.points:
        recs = [read_run(runs_root, point.configs[s].run_name()) for s in selection]
        if all(r.status == "complete" for r in recs):
            vals = [r.final("val").get("acc") for r in recs]
            ok = all(isinstance(v, int | float) for v in vals)
            scores.append([float(v) for v in vals] if ok else None)
        else:
            scores.append(None)
    return choose_point(scores)


def run_suite(suite: Suite, *, runs_root: str | Path = "runs",
              overrides: Mapping[str, Any] | None = None, seeds: Sequence[int] | None = None,
              progress: bool = False, datasets: Sequence[str] | None = None,
              arms: Sequence[str] | None = None,
              train_fn: Callable[..., Any] | None = None) -> SuiteOutcome:
    """Run every missing run of ``suite`` under ``runs_root`` and return what happened.

    Complete runs are skipped, partial runs resumed, diverged runs (failed.json) are not
    retried; a run that diverges now is recorded and the suite goes on. ``datasets`` and
    ``arms`` restrict what runs now (by label); the manifest still covers the whole suite, so
    a large suite can be run in pieces. ``train_fn``
    replaces :func:`mixupe.engine.train` (same signature), e.g. to run under a profiler.
    """
    root = Path(runs_root)
    if train_fn is None:
        from mixupe.engine import train as train_fn
    plan = plan_suite(suite, overrides=overrides, seeds=seeds)
    write_manifest(root, plan.manifest)

    def wanted(dataset: str, arm: str) -> bool:
        return (datasets is None or dataset in datasets) and (arms is None or arm in arms)

    arm_plans = [p for p in plan.plans if wanted(p.dataset, p.arm)]
    phase1 = [r for r in plan.phase1 if wanted(r.dataset, r.arm)]
    rest = [s for s in plan.seeds if s not in plan.selection_seeds]
    outcome = SuiteOutcome()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(phase1) + len(rest) * len(arm_plans), desc=f"suite {suite.name}",
                   unit="run")

    def run_one(run: PlannedRun) -> None:
        name = run.config.run_name()
        status = run_status(root, run.config)
        if status in ("complete", "failed"):
            outcome.skipped.append(name)
            if status == "failed":
                outcome.failed.append((name, "diverged earlier (failed.json); not retried"))
            log.info("skip %s (%s): %s", run.describe(), status, name)
        else:
            log.info("%s %s: %s", "resume" if status == "partial" else "train",
                     run.describe(), name)
            try:
                result = train_fn(run.config, runs_root=root, resume=status == "partial",
                                  progress=progress)
            except NonFiniteLossError as exc:
                outcome.failed.append((name, str(exc)))
                log.warning("run diverged, going on with the suite: %s: %s", name, exc)
            else:
                outcome.trained.append(name)
                final = getattr(result, "final", {}) or {}
                val = final.get("val", {}).get("acc") if isinstance(final, dict) else None
                if bar is not None and isinstance(val, float):
                    bar.set_postfix_str(f"{run.dataset}/{run.arm} s{run.seed} val acc {val:.3f}")
        if bar is not None:
            bar.update(1)

    try:
        for run in phase1:
            run_one(run)
        for arm_plan in arm_plans:
            chosen = _choose(root, arm_plan, plan.selection_seeds)
            if chosen is None:
                outcome.unselected.append(f"{arm_plan.dataset} / {arm_plan.arm}")
                log.warning("%s / %s: no grid point completed its selection runs; the other "
                            "seeds are not run", arm_plan.dataset, arm_plan.arm)
                if bar is not None:
                    bar.update(len(rest))
                continue
            point = arm_plan.points[chosen]
            for seed in rest:
                run_one(PlannedRun(arm_plan.dataset, arm_plan.arm, chosen, seed,
                                   point.configs[seed]))
    finally:
        if bar is not None:
            bar.close()
    return outcome
