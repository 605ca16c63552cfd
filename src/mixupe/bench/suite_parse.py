"""Reading a suite: the TOML (as a dict) validated into a :class:`Suite`, every mistake a
ConfigError that names the entry and the fix (the format is in :mod:`mixupe.bench.suites`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from mixupe.bench.suite_types import (
    STRETCHED,
    ArmSpec,
    DatasetSpec,
    EqualCompute,
    Hypothesis,
    Suite,
)
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["check_fields", "parse_suite"]

_SUITE_KEYS = {"name", "description", "seeds", "selection_seeds", "baseline", "contrasts",
               "precondition", "hypotheses", "defaults", "datasets", "arms"}
_HYPOTHESIS_KEYS = {"id", "dataset", "arm", "baseline", "direction", "text"}
_DIRECTIONS = (">", "<", ">=", "<=", "=")


def _int_list(value: Any, what: str) -> tuple[int, ...]:
    if (not isinstance(value, list | tuple) or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ConfigError(f"{what} = {value!r} must be a non-empty list of integers, "
                          f"e.g. [0, 1, 2]")
    if len(set(value)) != len(value):
        raise ConfigError(f"{what} = {value!r} repeats a seed; list each seed once")
    return tuple(value)


def _field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(TrainConfig)}


def check_fields(settings: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(settings) - _field_names())
    if unknown:
        raise ConfigError(
            f"{where} sets unknown option(s) {unknown}; use TrainConfig fields such as "
            f"{sorted(_field_names())[:8]}... (see `mixupe train --help`)"
        )
    if "seed" in settings:
        raise ConfigError(f"{where} sets 'seed'; list seeds in the suite's top-level `seeds` "
                          f"instead")


def parse_suite(data: Mapping[str, Any], *, source: str = "suite") -> Suite:
    """Validate a suite given as a dict (the parsed TOML) and return a :class:`Suite`."""
    name = _parse_name(data, source)
    seeds = _int_list(data.get("seeds", [0]), f"{source}: seeds")
    selection = _int_list(data.get("selection_seeds", list(seeds)), f"{source}: selection_seeds")
    defaults = dict(data.get("defaults", {}))
    check_fields(defaults, f"{source} [defaults]")
    datasets = _parse_datasets(data.get("datasets", []), source)
    arms = _parse_arms(data.get("arms", []), datasets, source)
    labels = [a.label for a in arms]
    baseline = _parse_baseline(data.get("baseline"), arms, source)
    contrasts = _parse_contrasts(data.get("contrasts", []), labels, source)
    for arm in arms:
        if arm.equal_compute is not None and arm.equal_compute.of not in labels:
            raise ConfigError(f"{source} arm {arm.label!r}: equal_compute of = "
                              f"{arm.equal_compute.of!r} is not an arm label; use one of "
                              f"{labels}")
    precondition = None
    if "precondition" in data:
        (precondition,) = _parse_contrasts([data["precondition"]], labels,
                                           f"{source} precondition")
    _check_reported_seeds(seeds, selection, arms, source)
    hypotheses = _parse_hypotheses(data.get("hypotheses", []), datasets=datasets, arms=arms,
                                  source=source)
    return Suite(name=name, description=str(data.get("description", "")), seeds=seeds,
                 selection_seeds=selection, baseline=baseline, defaults=defaults,
                 datasets=tuple(datasets), arms=tuple(arms), contrasts=contrasts,
                 precondition=precondition, hypotheses=hypotheses)


def _parse_name(data: Mapping[str, Any], source: str) -> str:
    """The suite's name, after refusing unknown top-level keys."""
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{source} has unknown top-level key(s) {unknown}; allowed: "
                          f"{sorted(_SUITE_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{source}: name = {name!r} must be a non-empty string without '/'")
    return name


def _parse_datasets(entries: Sequence[Any], source: str) -> list[DatasetSpec]:
    """``[[datasets]]`` tables: ``name`` (TrainConfig.dataset), ``label`` and fields."""
    datasets = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        if "name" not in entry:
            raise ConfigError(f"{source}: datasets entry {i} has no 'name'; add name = \"digits\"")
        label = str(entry.pop("label", entry["name"]))
        entry["dataset"] = entry.pop("name")
        check_fields(entry, f"{source} dataset {label!r}")
        datasets.append(DatasetSpec(label=label, settings=entry))
    if not datasets:
        raise ConfigError(f"{source} lists no datasets; add at least one [[datasets]] table")
    return datasets


def _parse_arms(entries: Sequence[Any], datasets: Sequence[DatasetSpec],
                source: str) -> list[ArmSpec]:
    """``[[arms]]`` tables, each checked against the datasets and the arms before it; then
    every dataset and arm label must be distinct."""
    arms: list[ArmSpec] = []
    for i, entry in enumerate(entries):
        arms.append(_parse_arm(i, dict(entry), datasets, arms, source))
    if not arms:
        raise ConfigError(f"{source} lists no arms; add at least one [[arms]] table")
    named = (("dataset", [d.label for d in datasets]), ("arm", [a.label for a in arms]))
    for kind, labels in named:
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"{source}: {kind} label(s) {dup} used twice; give each a "
                              f"distinct `label`")
    return arms


def _parse_arm(i: int, entry: dict[str, Any], datasets: Sequence[DatasetSpec],
               earlier: Sequence[ArmSpec], source: str) -> ArmSpec:
    """One ``[[arms]]`` table (``entry``, a copy: the keys that are not fields are popped)."""
    label = entry.pop("label", None)
    if not isinstance(label, str) or not label:
        raise ConfigError(f"{source}: arms entry {i} has no label; add label = \"Mixup\"")
    grid = dict(entry.pop("grid", {}))
    follow = entry.pop("follow", {})
    only = entry.pop("datasets", None)
    compute = entry.pop("equal_compute", None)
    where = f"{source} arm {label!r}"
    check_fields(entry, where)
    check_fields(grid, f"{where} grid")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: grid {key} = {values!r} must be a non-empty list")
    follow = _parse_follow(follow, where, entry, grid, [a.label for a in earlier])
    only = _parse_only(only, where, datasets)
    _check_followed_datasets(follow, only, earlier, where)
    arm = ArmSpec(label=label, settings=entry, grid=grid, follow=follow, only=only)
    if compute is None:
        return arm
    runs_on = [d for d in datasets if only is None or d.label in only]
    return dataclasses.replace(
        arm, equal_compute=_parse_equal_compute(compute, where, grid, runs_on))


def _parse_only(only: Any, where: str,
                datasets: Sequence[DatasetSpec]) -> tuple[str, ...] | None:
    """An arm's ``datasets = [...]``: labels of the suite's datasets (None: all of them)."""
    if only is None:
        return None
    labels = [d.label for d in datasets]
    if not isinstance(only, list) or not only or any(o not in labels for o in only):
        raise ConfigError(f"{where}: datasets = {only!r} must list dataset labels of "
                          f"this suite, e.g. {labels[:1]}")
    return tuple(only)


def _check_followed_datasets(follow: Mapping[str, str], only: tuple[str, ...] | None,
                             earlier: Sequence[ArmSpec], where: str) -> None:
    """An arm runs only where every arm it follows runs."""
    for parent_label in follow.values():
        parent = next(a for a in earlier if a.label == parent_label)
        if parent.only is not None and (only is None or set(only) - set(parent.only)):
            raise ConfigError(f"{where}: follows {parent_label!r}, which runs only on "
                              f"{list(parent.only)}; restrict this arm to those datasets "
                              f"(datasets = {list(parent.only)})")


def _parse_baseline(baseline: Any, arms: Sequence[ArmSpec], source: str) -> str | None:
    """The arm paired differences are taken against (default: the first ``mixup`` arm)."""
    if baseline is None:
        return next((a.label for a in arms if a.settings.get("method") == "mixup"), None)
    if baseline not in {a.label for a in arms}:
        raise ConfigError(f"{source}: baseline = {baseline!r} is not an arm label; use one of "
                          f"{[a.label for a in arms]}")
    return baseline


def _check_reported_seeds(seeds: Sequence[int], selection: Sequence[int],
                          arms: Sequence[ArmSpec], source: str) -> None:
    """A cell that chooses among grid points reports only the seeds that did not choose."""
    chooses = any(a.follow or math.prod(len(v) for v in a.grid.values()) > 1 for a in arms)
    if chooses and not set(seeds) - set(selection):
        raise ConfigError(f"{source}: every seed {list(seeds)} is a selection seed, so a cell "
                          f"that chooses among grid points would report no seed (selection "
                          f"seeds are left out of the reported statistics); add reported "
                          f"seeds to `seeds` or list other `selection_seeds`")


def _labels(value: Any, key: str, known: Sequence[str], where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(x, str) for x in items):
        raise ConfigError(f"{where}: {key} = {value!r} must be a label or a non-empty list of "
                          f"labels, e.g. {known[:1]}")
    unknown = [x for x in items if x not in known]
    if unknown:
        raise ConfigError(f"{where}: {key} names unknown label(s) {unknown}; use labels from "
                          f"{list(known)}")
    return tuple(items)


def _parse_hypotheses(value: Any, *, datasets: Sequence[DatasetSpec], arms: Sequence[ArmSpec],
                     source: str = "suite") -> tuple[Hypothesis, ...]:
    """``[[hypotheses]]`` tables: id, dataset(s), arm(s), baseline, direction (and text)."""
    if not isinstance(value, list):
        raise ConfigError(f"{source}: hypotheses must be [[hypotheses]] tables, got {value!r}")
    out: list[Hypothesis] = []
    arm_of = {a.label: a for a in arms}
    for i, entry in enumerate(value):
        where = f"{source} hypothesis {i}"
        if not isinstance(entry, dict) or set(entry) - _HYPOTHESIS_KEYS:
            extra = sorted(set(entry) - _HYPOTHESIS_KEYS) if isinstance(entry, dict) else entry
            raise ConfigError(f"{where}: unknown key(s) {extra}; allowed: "
                              f"{sorted(_HYPOTHESIS_KEYS)}")
        hid = entry.get("id")
        if not isinstance(hid, str) or not hid or any(h.id == hid for h in out):
            raise ConfigError(f"{where}: id = {hid!r} must be a non-empty string used once, "
                              f"e.g. id = \"H{i + 1}\"")
        where = f"{source} hypothesis {hid}"
        ds = _labels(entry.get("dataset"), "dataset", [d.label for d in datasets], where)
        arm_labels = _labels(entry.get("arm"), "arm", list(arm_of), where)
        (base,) = _labels(entry.get("baseline"), "baseline", list(arm_of), where)[:1]
        if entry.get("direction") not in _DIRECTIONS:
            raise ConfigError(f"{where}: direction = {entry.get('direction')!r} must be one "
                              f"of {list(_DIRECTIONS)} (arm minus baseline)")
        if base in arm_labels:
            raise ConfigError(f"{where}: arm {base!r} is compared with itself; name a "
                              f"baseline other than the arms")
        for label in (*arm_labels, base):
            only = arm_of[label].only
            missing = [d for d in ds if only is not None and d not in only]
            if missing:
                raise ConfigError(f"{where}: arm {label!r} does not run on {missing}; list "
                                  f"only datasets it runs on ({list(only or ())})")
        out.append(Hypothesis(hid, ds, arm_labels, base, entry["direction"],
                              str(entry.get("text", ""))))
    return tuple(out)


def _parse_follow(value: Any, where: str, settings: Mapping[str, Any],
                  grid: Mapping[str, Any], earlier: Sequence[str]) -> dict[str, str]:
    """``follow = { alpha = "Mixup" }``: keys taken from the choice of an arm listed earlier."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: follow = {value!r} must be a table such as "
                          f"{{ alpha = \"Mixup\" }}")
    check_fields(value, f"{where} follow")
    for key, label in value.items():
        if label not in earlier:
            raise ConfigError(f"{where}: follow {key} = {label!r} must name an arm listed "
                              f"before this one; use one of {list(earlier)}")
        if key in settings or key in grid:
            raise ConfigError(f"{where}: {key!r} is both followed from {label!r} and set by the "
                              f"arm itself; remove one of them")
    return dict(value)


def _parse_equal_compute(value: Any, where: str, grid: Mapping[str, Any],
                         datasets: Sequence[DatasetSpec]) -> EqualCompute:
    """``equal_compute = { of = "ARM", ratio = { DATASET = R, ... }, measured = "..." }``."""
    example = '{ of = "MixupE v3", ratio = { letter = 1.8 } }'
    if not isinstance(value, dict) or set(value) - {"of", "ratio", "measured"} or not {
            "of", "ratio"} <= set(value):
        raise ConfigError(f"{where}: equal_compute = {value!r} must be a table with `of` (an "
                          f"arm label), `ratio` and optionally `measured`, e.g. {example}")
    of, ratio = value["of"], value["ratio"]
    if not isinstance(of, str) or not isinstance(ratio, dict):
        raise ConfigError(f"{where}: equal_compute needs of = an arm label and ratio = a table "
                          f"of dataset names to ratios, e.g. {example}")
    stretched = sorted(set(grid) & set(STRETCHED))
    if stretched:
        raise ConfigError(f"{where}: equal_compute stretches the schedule, so {stretched} may "
                          f"not be in the grid; set them in [defaults] or the dataset")
    for name, r in ratio.items():
        if isinstance(r, bool) or not isinstance(r, int | float) or not math.isfinite(r) or r <= 0:
            raise ConfigError(f"{where}: equal_compute ratio {name} = {r!r} must be a positive "
                              f"number (a step time of {of!r} divided by this arm's)")
    missing = sorted({str(d.settings["dataset"]) for d in datasets} - set(ratio))
    if missing:
        raise ConfigError(f"{where}: equal_compute has no ratio for dataset(s) {missing}; add "
                          f"them to `ratio` (keyed by dataset name, e.g. {{ {missing[0]} = "
                          f"1.8 }}) or restrict the arm with `datasets`")
    return EqualCompute(of=of, ratio={k: float(v) for k, v in ratio.items()},
                        measured=str(value.get("measured", "")))


def _parse_contrasts(value: Any, labels: Sequence[str],
                     source: str) -> tuple[tuple[str, str], ...]:
    """``contrasts = [["A", "B"], ...]``: pairs of distinct arm labels (A minus B)."""
    if not isinstance(value, list):
        raise ConfigError(f"{source}: contrasts = {value!r} must be a list of [\"A\", \"B\"] "
                          f"pairs of arm labels")
    pairs = []
    for entry in value:
        if (not isinstance(entry, list | tuple) or len(entry) != 2
                or not all(isinstance(x, str) for x in entry)):
            raise ConfigError(f"{source}: contrast {entry!r} must be a pair of arm labels, "
                              f"e.g. [\"MixupE v3\", \"Mixup\"]")
        a, b = entry
        unknown = [x for x in (a, b) if x not in labels]
        if unknown:
            raise ConfigError(f"{source}: contrast {list(entry)} names unknown arm(s) {unknown}; "
                              f"use labels from {list(labels)}")
        if a == b:
            raise ConfigError(f"{source}: contrast {list(entry)} compares an arm with itself; "
                              f"name two different arms")
        pairs.append((a, b))
    return tuple(pairs)
