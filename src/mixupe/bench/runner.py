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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mixupe.bench.rundirs import RunReader
from mixupe.bench.selection import Selection, select_cell
from mixupe.bench.suites import ArmPlan, Suite, expand, manifest, variant_name, write_manifest
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError, NonFiniteLossError

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
              train_fn: Callable[..., Any] | None = None) -> SuiteOutcome:
    """Run every missing run of ``suite`` under ``runs_root`` and return what happened.

    Complete runs are skipped, partial runs resumed, diverged runs (failed.json) are not
    retried; a run that diverges now is recorded and the suite goes on. ``datasets`` and
    ``arms`` restrict what runs now (by label); the manifest still covers the whole suite, so
    a large suite can be run in pieces. With ``overrides`` or ``seeds`` the suite runs under
    a variant name (its own manifest). ``train_fn`` replaces :func:`mixupe.engine.train`
    (same signature), e.g. to run under a profiler.
    """
    root = Path(runs_root)
    if train_fn is None:
        from mixupe.engine import train as train_fn
    plan = plan_suite(suite, overrides=overrides, seeds=seeds)
    write_manifest(root, plan.manifest)
    outcome = SuiteOutcome()
    by_cell = {(p.dataset, p.arm): p for p in plan.plans}

    def wanted(dataset: str, arm: str) -> bool:
        return (datasets is None or dataset in datasets) and (arms is None or arm in arms)

    record = RunReader(root)

    def selections() -> dict[tuple[str, str], Selection]:
        return cell_selections(plan.plans, seeds=plan.seeds,
                               selection_seeds=plan.selection_seeds,
                               status=lambda n: record(n).status,
                               val_acc=lambda n: record(n).final("val").get("acc"))

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=plan.total_runs, desc=f"suite {plan.name}", unit="run")

    def run_one(dataset: str, arm: str, point: int, seed: int) -> None:
        cfg = by_cell[(dataset, arm)].points[point].configs[seed]
        name = cfg.run_name()
        status = record(name).status
        described = PlannedRun(dataset, arm, point, seed, cfg).describe()
        if status in ("complete", "failed"):
            outcome.skipped.append(name)
            if status == "failed":
                outcome.failed.append((name, "diverged earlier (failed.json); not retried"))
            log.info("skip %s (%s): %s", described, status, name)
        else:
            log.info("%s %s: %s", "resume" if status == "partial" else "train", described, name)
            try:
                result = train_fn(cfg, runs_root=root, resume=status == "partial",
                                  progress=progress)
            except NonFiniteLossError as exc:
                outcome.failed.append((name, str(exc)))
                log.warning("run diverged, going on with the suite: %s: %s", name, exc)
            else:
                outcome.trained.append(name)
                final = getattr(result, "final", {}) or {}
                val = final.get("val", {}).get("acc") if isinstance(final, dict) else None
                if bar is not None and isinstance(val, float):
                    bar.set_postfix_str(f"{dataset}/{arm} s{seed} val acc {val:.3f}")
            record.forget(name)
        if bar is not None:
            bar.update(1)

    try:
        # Selection stages: run what the current state makes eligible until nothing changes.
        done_selecting: set[tuple[str, str]] = set()
        while True:
            state = selections()
            ready = [(key, sel) for key, sel in state.items()
                     if key not in done_selecting and not sel.waiting_for and wanted(*key)]
            if not ready:
                break
            for (dataset, arm), sel in ready:
                for i in sel.eligible if sel.chose else ():
                    for seed in sel.selection_seeds:
                        run_one(dataset, arm, i, seed)
                done_selecting.add((dataset, arm))
        # Reporting stage: each chosen point with its reported seeds.
        for (dataset, arm), sel in selections().items():
            if not wanted(dataset, arm):
                continue
            if sel.chosen is None:
                outcome.unselected.append(f"{dataset} / {arm}")
                why = (f"waiting for {list(sel.waiting_for)} to choose" if sel.waiting_for
                       else "no grid point completed its selection runs")
                log.warning("%s / %s: %s; its reported seeds are not run", dataset, arm, why)
                continue
            for seed in sel.reported_seeds:
                run_one(dataset, arm, sel.chosen, seed)
    finally:
        if bar is not None:
            bar.close()
    return outcome
