"""Suite manifests: the JSON record under ``RUNS/_suites/`` that maps every dataset x arm x
grid point x seed of a suite to its run directory, written by the runner, read by the report."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mixupe.atomic import atomic_write
from mixupe.bench.suite_types import ArmPlan, Suite
from mixupe.errors import CorruptDataError

__all__ = ["MANIFEST_DIR", "manifest", "manifest_path", "read_manifests", "write_manifest"]

MANIFEST_DIR = "_suites"


def manifest(suite: Suite, plans: Sequence[ArmPlan], *, seeds: Sequence[int] | None = None,
             name: str | None = None) -> dict[str, Any]:
    """The JSON-able record of a suite's runs that the report reads back.

    It maps every dataset x arm x grid point x seed to its run directory name, so the
    report needs nothing but the runs directory. ``name``: the variant name to record
    (default: the suite's).
    """
    return {
        "suite": name or suite.name,
        "description": suite.description,
        "seeds": list(seeds) if seeds is not None else list(suite.seeds),
        "selection_seeds": list(suite.selection_seeds),
        "baseline": suite.baseline,
        "contrasts": [list(c) for c in suite.contrasts],
        **({"precondition": list(suite.precondition)} if suite.precondition else {}),
        **({"hypotheses": [h.to_dict() for h in suite.hypotheses]} if suite.hypotheses
           else {}),
        "datasets": [d.label for d in suite.datasets],
        "arms": [a.label for a in suite.arms],
        "cells": [
            {
                "dataset": plan.dataset,
                "arm": plan.arm,
                **({"follow": dict(plan.follow)} if plan.follow else {}),
                **({"equal_compute": _jsonable_tree(plan.compute)} if plan.compute else {}),
                "points": [
                    {"params": {k: _jsonable(v) for k, v in point.params.items()},
                     "runs": {str(seed): cfg.run_name() for seed, cfg in point.configs.items()}}
                    for point in plan.points
                ],
            }
            for plan in plans
        ],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    return value


def _jsonable_tree(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable_tree(v) for k, v in value.items()}
    return _jsonable(value)


def manifest_path(runs_root: str | Path, suite_name: str) -> Path:
    """Where the manifest of suite ``suite_name`` lives under ``runs_root``."""
    return Path(runs_root) / MANIFEST_DIR / f"{suite_name}.json"


def write_manifest(runs_root: str | Path, record: Mapping[str, Any]) -> Path:
    """Write a suite manifest atomically and return its path."""
    path = manifest_path(runs_root, str(record["suite"]))
    # A unique temp name per write: two workers may run pieces of one suite at once.
    atomic_write(path, json.dumps(record, indent=1))
    return path


def read_manifests(runs_root: str | Path) -> list[dict[str, Any]]:
    """Every suite manifest under ``runs_root`` (sorted by suite name)."""
    folder = Path(runs_root) / MANIFEST_DIR
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise CorruptDataError(f"suite manifest {path} is not valid JSON ({exc}); delete it "
                                   f"and rerun `mixupe bench` to rewrite it") from exc
    return records
