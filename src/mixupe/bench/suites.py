"""Benchmark suites: reading the TOML description and expanding it into training configs.

A suite is datasets x arms (methods) x hyper-parameter grids x seeds::

    name = "example"
    seeds = [0, 1, 2]              # the seeds reported
    selection_seeds = [100, 101]   # seeds every grid point runs with to choose one; left out of
                                   # the reported statistics (default: all seeds)
    baseline = "Mixup"             # arm the paired differences are taken against
    contrasts = [["MixupE v3", "Mixup"]]   # extra paired comparisons "A minus B" to report
    precondition = ["Mixup", "ERM"]        # report whether A beats B at convergence
    [[hypotheses]]                 # optional, pre-registered: "arm direction baseline"
    id = "H1"
    dataset = "digits"             # a dataset label, or a list of them
    arm = "MixupE v3"              # an arm label, or a list of them (one comparison each)
    baseline = "Mixup"
    direction = ">"                # one of >, <, >=, <=, =
    [defaults]                     # TrainConfig fields for every run
    epochs = 5
    [[datasets]]
    name = "digits"                # TrainConfig.dataset; other keys override TrainConfig fields
    model = "mlp"
    [[arms]]
    label = "Mixup"
    method = "mixup"
    grid = { alpha = [0.2, 1.0] }
    [[arms]]
    label = "MixupE v3"
    method = "mixupe"
    grid = { eta = [0.01, 0.1] }
    follow = { alpha = "Mixup" }   # use the alpha that arm "Mixup" chose on this dataset
    datasets = ["digits"]          # optional: the dataset labels this arm runs on
    [[arms]]
    label = "Mixup at equal compute"
    method = "mixup"
    follow = { alpha = "Mixup" }
    equal_compute = { of = "MixupE v3", ratio = { digits = 1.8 }, measured = "how" }

A cell (dataset x arm) with one grid point needs no selection and reports every seed. A
cell with several points runs each with the selection seeds, chooses the best mean
validation accuracy, and reports the chosen point over the seeds that are not selection
seeds (see :mod:`mixupe.bench.selection`). An arm that ``follow``s another takes the other
arm's chosen value of a key: its grid is crossed with the other arm's values, and only the
points at the chosen value run. An arm with ``equal_compute`` runs the schedule of arm ``of``
stretched to that arm's training compute (see :class:`EqualCompute`).

Settings are merged in the order: TrainConfig defaults < ``[defaults]`` < dataset < arm <
grid point < overrides given by the caller (``--set`` on the command line) < seed.

Example:
    >>> suite = load_suite("smoke")
    >>> suite.name
    'smoke'
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# The parts of a suite, re-exported here: this module is where suites are documented.
from mixupe.bench.expansion import expand
from mixupe.bench.manifests import (
    manifest,
    manifest_path,
    read_manifests,
    write_manifest,
)
from mixupe.bench.suite_parse import parse_suite
from mixupe.bench.suite_types import (
    ArmPlan,
    ArmSpec,
    DatasetSpec,
    EqualCompute,
    GridPoint,
    Hypothesis,
    Suite,
    stretch_schedule,
)
from mixupe.errors import ConfigError

__all__ = [
    "ArmPlan",
    "ArmSpec",
    "DatasetSpec",
    "EqualCompute",
    "GridPoint",
    "Hypothesis",
    "Suite",
    "builtin_suites",
    "expand",
    "load_suite",
    "manifest",
    "manifest_path",
    "parse_suite",
    "read_manifests",
    "restrict_grid",
    "stretch_schedule",
    "variant_name",
    "write_manifest",
]


def builtin_suites() -> list[str]:
    """Names of the suites shipped with mixupe (``smoke``, ``quick``, ``full``, ``images``,
    ``family``)."""
    folder = resources.files("mixupe.bench") / "suites"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """Load a built-in suite by name or a suite from a TOML file.

    Example:
        >>> load_suite("quick").seeds
        (0, 1, 2)
    """
    text: str
    source: str
    path = Path(name_or_path)
    if str(name_or_path) in builtin_suites():
        resource = resources.files("mixupe.bench") / "suites" / f"{name_or_path}.toml"
        text, source = resource.read_text(encoding="utf-8"), f"built-in suite '{name_or_path}'"
    elif path.is_file():
        text, source = path.read_text(encoding="utf-8"), str(path)
    else:
        raise ConfigError(
            f"suite {str(name_or_path)!r} is neither a built-in suite nor an existing file; "
            f"use one of {builtin_suites()} or the path of a suite TOML file"
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML ({exc}); fix the syntax") from exc
    if "name" not in data and path.suffix == ".toml":
        data["name"] = path.stem
    return parse_suite(data, source=source)


def restrict_grid(suite: Suite, restrictions: Mapping[str, Sequence[Any]]) -> Suite:
    """The suite with its grids cut down to the given values: an ablation of the same study.

    Every arm whose grid has a restricted key keeps only those values (they must be in its
    grid); arms without the key are unchanged. Runs keep their names, so the runs the full
    suite already made are reused. The restricted suite gets its own name (``full@alpha=0.2``)
    and manifest, so its report sits beside the full one.

    Example:
        >>> s = restrict_grid(load_suite("full"), {"alpha": [0.2]})
        >>> s.name, dict(s.arms[1].grid)
        ('full@alpha=0.2', {'alpha': [0.2]})
    """
    if not restrictions:
        raise ConfigError("restrict_grid got no restrictions; pass e.g. {'alpha': [0.2]}")
    keys_in_grids = sorted({k for a in suite.arms for k in a.grid})
    arms = list(suite.arms)
    for key, values in restrictions.items():
        values = list(values)
        if key not in keys_in_grids:
            raise ConfigError(f"--restrict {key}: no arm of suite {suite.name!r} searches "
                              f"{key!r}; restrict one of its grid keys {keys_in_grids}")
        if not values:
            raise ConfigError(f"--restrict {key}: give at least one value, e.g. {key}=0.2")
        for i, arm in enumerate(arms):
            if key not in arm.grid:
                continue
            missing = [v for v in values if v not in arm.grid[key]]
            if missing:
                raise ConfigError(f"--restrict {key}={missing}: not in the grid of arm "
                                  f"{arm.label!r} ({arm.grid[key]}); restrict to values the "
                                  f"suite searches, so its runs are reused")
            kept = [next(g for g in arm.grid[key] if g == v) for v in values]  # 1 -> 1.0
            arms[i] = dataclasses.replace(arm, grid={**arm.grid, key: kept})
    tag = ",".join(f"{k}=" + "|".join(f"{v:g}" if isinstance(v, float) else str(v)
                                       for v in vs) for k, vs in restrictions.items())
    return dataclasses.replace(
        suite, name=f"{suite.name}@{tag}", arms=tuple(arms),
        description=(suite.description + f" Grids restricted to {tag}.").strip())


def variant_name(name: str, *, overrides: Mapping[str, Any] | None = None,
                 seeds: Sequence[int] | None = None) -> str:
    """The name a suite runs under with caller overrides: its own manifest, never the suite's.

    >>> variant_name("quick", overrides={"epochs": 2}, seeds=[0, 1])
    'quick@set:epochs=2@seeds=0,1'
    >>> variant_name("quick")
    'quick'
    """
    def show(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "|".join(show(v) for v in value)
        if isinstance(value, dict):
            return "|".join(f"{k}:{show(v)}" for k, v in sorted(value.items()))
        return f"{value:g}" if isinstance(value, float) else str(value)

    if overrides:
        name += "@set:" + ",".join(f"{k}={show(v)}" for k, v in sorted(overrides.items()))
    if seeds is not None:
        name += "@seeds=" + ",".join(str(s) for s in seeds)
    return name.replace("/", "_")

