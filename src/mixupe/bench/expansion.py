"""Expanding a suite into runs: one :class:`ArmPlan` per dataset x arm, a validated
TrainConfig per grid point and seed (the merge order is in :mod:`mixupe.bench.suites`)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from mixupe.bench.suite_parse import check_fields
from mixupe.bench.suite_types import (
    STRETCHED,
    ArmPlan,
    ArmSpec,
    DatasetSpec,
    GridPoint,
    Suite,
    stretch_schedule,
)
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["expand"]


def _tupled(value: Any) -> Any:
    """TOML arrays become tuples, the type of TrainConfig's sequence fields."""
    if isinstance(value, list):
        return tuple(_tupled(v) for v in value)
    return value


def _followed_values(suite: Suite, arm: ArmSpec, ds: DatasetSpec,
                     overrides: Mapping[str, Any]) -> dict[str, list[Any]]:
    """For each followed key, the values the followed arm can choose on dataset ``ds``."""
    by_label = {a.label: a for a in suite.arms}
    out = {}
    for key, label in arm.follow.items():
        parent = by_label[label]
        if key in overrides:
            out[key] = [overrides[key]]
        elif key in parent.grid:
            out[key] = list(parent.grid[key])
        else:
            merged = {**suite.defaults, **ds.settings, **parent.settings}
            out[key] = [merged.get(key, getattr(TrainConfig(), key))]
    return out


def _equal_compute(suite: Suite, arm: ArmSpec, ds: DatasetSpec,
                   overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest record of an ``equal_compute`` arm on ``ds`` (``{}`` for other arms): the
    arm it matches, the ratio, the schedule before and after stretching and how the ratio was
    measured. The schedule stretched is arm ``of``'s, which must equal this arm's own."""
    spec = arm.equal_compute
    if spec is None:
        return {}
    of = next(a for a in suite.arms if a.label == spec.of)
    where = f"suite {suite.name!r}, arm {arm.label!r}, dataset {ds.label!r}"
    if of.only is not None and ds.label not in of.only:
        raise ConfigError(f"{where}: equal_compute matches {spec.of!r}, which does not run on "
                          f"this dataset; restrict the arm with `datasets = {list(of.only)}`")
    default = {k: getattr(TrainConfig(), k) for k in STRETCHED}

    def schedule(settings: Mapping[str, Any]) -> dict[str, Any]:
        merged = {**default, **suite.defaults, **ds.settings, **settings, **overrides}
        return {k: _tupled(merged[k]) for k in STRETCHED}

    base = schedule(arm.settings)
    if base != schedule(of.settings):
        raise ConfigError(f"{where}: its schedule {base} differs from that of {spec.of!r} "
                          f"({schedule(of.settings)}); equal_compute stretches the common "
                          f"schedule, so set these fields in [defaults] or the dataset only")
    factor = spec.ratio[str(ds.settings["dataset"])]
    stretched = stretch_schedule(base, factor)
    return {"of": spec.of, "ratio": factor, "schedule": base, "stretched": stretched,
            "measured": spec.measured}


def expand(suite: Suite, *, overrides: Mapping[str, Any] | None = None,
           seeds: Sequence[int] | None = None) -> list[ArmPlan]:
    """Expand a suite into one :class:`ArmPlan` per dataset x arm (each config validated).

    Every grid point gets a config for each reported seed and each selection seed. An arm
    that follows another has its grid crossed with the followed keys' candidate values.
    ``overrides`` set TrainConfig fields for every run (and replace grid entries of the same
    name); ``seeds`` replaces the suite's reported seeds.

    Example:
        >>> from mixupe.bench.suites import load_suite
        >>> plans = expand(load_suite("smoke"), overrides={"epochs": 1})
        >>> plans[0].points[0].configs[0].epochs
        1
    """
    overrides = dict(overrides or {})
    check_fields(overrides, "overrides")
    run_seeds = tuple(seeds) if seeds is not None else suite.seeds
    all_seeds = tuple(dict.fromkeys((*run_seeds, *suite.selection_seeds)))
    return [_expand_cell(suite, ds, arm, overrides, all_seeds)
            for ds in suite.datasets for arm in suite.arms
            if arm.only is None or ds.label in arm.only]


def _expand_cell(suite: Suite, ds: DatasetSpec, arm: ArmSpec, overrides: Mapping[str, Any],
                 all_seeds: Sequence[int]) -> ArmPlan:
    """The plan of one dataset x arm: every grid point (crossed with the followed keys'
    values), each with a config per seed; two points that give the same run are refused."""
    grid = {k: v for k, v in arm.grid.items() if k not in overrides}
    grid |= _followed_values(suite, arm, ds, overrides)
    keys = list(grid)
    points = []
    seen: dict[str, Mapping[str, Any]] = {}
    compute = _equal_compute(suite, arm, ds, overrides)
    for combo in itertools.product(*(grid[k] for k in keys)):
        params = dict(zip(keys, combo, strict=True))
        merged = {**suite.defaults, **ds.settings, **arm.settings, **params, **overrides}
        merged = {k: _tupled(v) for k, v in merged.items()}
        merged |= compute.get("stretched", {})
        where = f"suite {suite.name!r}, dataset {ds.label!r}, arm {arm.label!r}"
        configs = {seed: _config(merged, seed, f"{where}, grid point {params}")
                   for seed in all_seeds}
        key = configs[all_seeds[0]].run_name()
        if key in seen:
            raise ConfigError(
                f"suite {suite.name!r}, arm {arm.label!r}: grid points {seen[key]} and "
                f"{params} give the same run on dataset {ds.label!r} (an option with no "
                f"effect for this method is in the grid); remove it from the grid"
            )
        seen[key] = params
        points.append(GridPoint(params=params, configs=configs))
    return ArmPlan(dataset=ds.label, arm=arm.label, points=tuple(points),
                   follow=dict(arm.follow), compute=compute)


def _config(merged: Mapping[str, Any], seed: int, where: str) -> TrainConfig:
    """The normalised TrainConfig of ``merged`` at ``seed``; a ConfigError naming ``where``."""
    try:
        return TrainConfig.from_dict({**merged, "seed": seed}).normalized()
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
