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
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mixupe.atomic import atomic_write
from mixupe.engine.config import TrainConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from mixupe.errors import ConfigError, CorruptDataError

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

_SUITE_KEYS = {"name", "description", "seeds", "selection_seeds", "baseline", "contrasts",
               "precondition", "hypotheses", "defaults", "datasets", "arms"}
_HYPOTHESIS_KEYS = {"id", "dataset", "arm", "baseline", "direction", "text"}
_DIRECTIONS = (">", "<", ">=", "<=", "=")
MANIFEST_DIR = "_suites"


@dataclass(frozen=True)
class DatasetSpec:
    """One ``[[datasets]]`` entry: a display label and the TrainConfig fields it sets."""

    label: str
    settings: Mapping[str, Any]


@dataclass(frozen=True)
class EqualCompute:
    """``equal_compute = { of = "MixupE v3", ratio = { letter = 1.8 }, measured = "..." }``.

    The arm trains for as long as arm ``of`` costs: its whole schedule (epochs, warm-up,
    milestones, ``off_epoch``) is multiplied by ``ratio[dataset]``, the measured training
    step time of ``of`` divided by this arm's on that dataset (keyed by the TrainConfig
    ``dataset`` name, so every size of a dataset shares one ratio), and rounded to whole
    epochs. The ratio is a fixed, committed measurement, so run names never depend on the
    machine; ``measured`` says how it was measured (the command). The factor, the schedule
    before and after, and ``measured`` are written into the suite manifest's cell.
    """

    of: str
    ratio: Mapping[str, float]
    measured: str = ""


STRETCHED = ("epochs", "warmup_epochs", "milestones", "off_epoch")


def stretch_schedule(settings: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The schedule fields of ``settings`` (:data:`STRETCHED`) multiplied by ``factor``.

    Epoch counts are rounded to the nearest integer, halves up (at least 1 epoch); fields
    that are not set, or None, are left out.

    >>> stretch_schedule({"epochs": 150, "warmup_epochs": 5, "milestones": [50, 100]}, 1.8)
    {'epochs': 270, 'warmup_epochs': 9, 'milestones': (90, 180)}
    """
    if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 0):
        raise ConfigError(f"equal_compute ratio {factor!r} must be a positive number, e.g. 1.8")
    def half_up(value: float) -> int:
        return math.floor(value * factor + 0.5)

    out: dict[str, Any] = {}
    for key in STRETCHED:
        value = settings.get(key)
        if value is None:
            continue
        if isinstance(value, list | tuple):
            out[key] = tuple(half_up(v) for v in value)
        else:
            out[key] = max(1, half_up(value)) if key == "epochs" else half_up(value)
    return out


@dataclass(frozen=True)
class ArmSpec:
    """One ``[[arms]]`` entry: a label, fixed TrainConfig fields and a grid of alternatives."""

    label: str
    settings: Mapping[str, Any]
    grid: Mapping[str, Sequence[Any]]
    follow: Mapping[str, str] = dataclasses.field(default_factory=dict)  # key -> arm label
    only: tuple[str, ...] | None = None  # dataset labels this arm runs on (None: all)
    equal_compute: EqualCompute | None = None


@dataclass(frozen=True)
class Hypothesis:
    """A pre-registered hypothesis: ``arm direction baseline`` on each dataset listed.

    Each (dataset, arm) pair is one comparison (arm minus baseline, paired over seeds); the
    report judges every comparison of every hypothesis of the suite as one Holm family.
    """

    id: str
    datasets: tuple[str, ...]
    arms: tuple[str, ...]
    baseline: str
    direction: str
    text: str = ""

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Hypothesis:
        """Read back :meth:`to_dict` (a manifest entry)."""
        def tup(v: Any) -> tuple[str, ...]:
            return (v,) if isinstance(v, str) else tuple(str(x) for x in v)

        return cls(str(record["id"]), tup(record["dataset"]), tup(record["arm"]),
                   str(record["baseline"]), str(record["direction"]),
                   str(record.get("text", "")))

    def to_dict(self) -> dict[str, Any]:
        """The manifest form (lists, as in the TOML)."""
        return {"id": self.id, "dataset": list(self.datasets), "arm": list(self.arms),
                "baseline": self.baseline, "direction": self.direction, "text": self.text}


@dataclass(frozen=True)
class Suite:
    """A parsed suite. ``seeds`` are reported; ``selection_seeds`` choose among grid points."""

    name: str
    description: str
    seeds: tuple[int, ...]
    selection_seeds: tuple[int, ...]
    baseline: str | None
    defaults: Mapping[str, Any]
    datasets: tuple[DatasetSpec, ...]
    arms: tuple[ArmSpec, ...]
    contrasts: tuple[tuple[str, str], ...] = ()  # (A, B): the report shows A minus B, paired
    precondition: tuple[str, str] | None = None  # (A, B): does A beat B at convergence?
    hypotheses: tuple[Hypothesis, ...] = ()  # pre-registered, judged by the report


@dataclass(frozen=True)
class GridPoint:
    """One hyper-parameter combination of an arm, with its config for every seed."""

    params: Mapping[str, Any]
    configs: Mapping[int, TrainConfig]


@dataclass(frozen=True)
class ArmPlan:
    """Everything one dataset x arm cell of a suite may run (``follow`` as in :class:`ArmSpec`)."""

    dataset: str
    arm: str
    points: tuple[GridPoint, ...]
    follow: Mapping[str, str] = dataclasses.field(default_factory=dict)
    compute: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # equal_compute record


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


def _check_fields(settings: Mapping[str, Any], where: str) -> None:
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
    unknown = sorted(set(data) - _SUITE_KEYS)
    if unknown:
        raise ConfigError(f"{source} has unknown top-level key(s) {unknown}; allowed: "
                          f"{sorted(_SUITE_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name or "/" in name:
        raise ConfigError(f"{source}: name = {name!r} must be a non-empty string without '/'")
    seeds = _int_list(data.get("seeds", [0]), f"{source}: seeds")
    selection = _int_list(data.get("selection_seeds", list(seeds)), f"{source}: selection_seeds")
    defaults = dict(data.get("defaults", {}))
    _check_fields(defaults, f"{source} [defaults]")

    datasets = []
    for i, entry in enumerate(data.get("datasets", [])):
        entry = dict(entry)
        if "name" not in entry:
            raise ConfigError(f"{source}: datasets entry {i} has no 'name'; add name = \"digits\"")
        label = str(entry.pop("label", entry["name"]))
        entry["dataset"] = entry.pop("name")
        _check_fields(entry, f"{source} dataset {label!r}")
        datasets.append(DatasetSpec(label=label, settings=entry))
    if not datasets:
        raise ConfigError(f"{source} lists no datasets; add at least one [[datasets]] table")

    arms = []
    for i, entry in enumerate(data.get("arms", [])):
        entry = dict(entry)
        label = entry.pop("label", None)
        if not isinstance(label, str) or not label:
            raise ConfigError(f"{source}: arms entry {i} has no label; add label = \"Mixup\"")
        grid = dict(entry.pop("grid", {}))
        follow = entry.pop("follow", {})
        only = entry.pop("datasets", None)
        compute = entry.pop("equal_compute", None)
        where = f"{source} arm {label!r}"
        _check_fields(entry, where)
        _check_fields(grid, f"{where} grid")
        for key, values in grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}: grid {key} = {values!r} must be a non-empty list")
        follow = _parse_follow(follow, where, entry, grid, [a.label for a in arms])
        if only is not None:
            labels = [d.label for d in datasets]
            if (not isinstance(only, list) or not only
                    or any(o not in labels for o in only)):
                raise ConfigError(f"{where}: datasets = {only!r} must list dataset labels of "
                                  f"this suite, e.g. {labels[:1]}")
            only = tuple(only)
        for parent_label in follow.values():
            parent = next(a for a in arms if a.label == parent_label)
            if parent.only is not None and (only is None or set(only) - set(parent.only)):
                raise ConfigError(f"{where}: follows {parent_label!r}, which runs only on "
                                  f"{list(parent.only)}; restrict this arm to those datasets "
                                  f"(datasets = {list(parent.only)})")
        arms.append(ArmSpec(label=label, settings=entry, grid=grid, follow=follow, only=only))
        if compute is not None:
            runs_on = [d for d in datasets if only is None or d.label in only]
            arms[-1] = dataclasses.replace(
                arms[-1], equal_compute=_parse_equal_compute(compute, where, grid, runs_on))
    if not arms:
        raise ConfigError(f"{source} lists no arms; add at least one [[arms]] table")
    named = (("dataset", [d.label for d in datasets]), ("arm", [a.label for a in arms]))
    for kind, labels in named:
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"{source}: {kind} label(s) {dup} used twice; give each a "
                              f"distinct `label`")

    baseline = data.get("baseline")
    if baseline is None:
        baseline = next((a.label for a in arms if a.settings.get("method") == "mixup"), None)
    elif baseline not in {a.label for a in arms}:
        raise ConfigError(f"{source}: baseline = {baseline!r} is not an arm label; use one of "
                          f"{[a.label for a in arms]}")
    contrasts = _parse_contrasts(data.get("contrasts", []), [a.label for a in arms], source)
    for arm in arms:
        labels = [a.label for a in arms]
        if arm.equal_compute is not None and arm.equal_compute.of not in labels:
            raise ConfigError(f"{source} arm {arm.label!r}: equal_compute of = "
                              f"{arm.equal_compute.of!r} is not an arm label; use one of "
                              f"{labels}")
    precondition = None
    if "precondition" in data:
        (precondition,) = _parse_contrasts([data["precondition"]], [a.label for a in arms],
                                           f"{source} precondition")
    chooses = any(a.follow or math.prod(len(v) for v in a.grid.values()) > 1 for a in arms)
    if chooses and not set(seeds) - set(selection):
        raise ConfigError(f"{source}: every seed {list(seeds)} is a selection seed, so a cell "
                          f"that chooses among grid points would report no seed (selection "
                          f"seeds are left out of the reported statistics); add reported "
                          f"seeds to `seeds` or list other `selection_seeds`")
    hypotheses = _parse_hypotheses(data.get("hypotheses", []), datasets=datasets, arms=arms,
                                  source=source)
    return Suite(name=name, description=str(data.get("description", "")), seeds=seeds,
                 selection_seeds=selection, baseline=baseline, defaults=defaults,
                 datasets=tuple(datasets), arms=tuple(arms), contrasts=contrasts,
                 precondition=precondition, hypotheses=hypotheses)


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
    _check_fields(value, f"{where} follow")
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
        >>> plans = expand(load_suite("smoke"), overrides={"epochs": 1})
        >>> plans[0].points[0].configs[0].epochs
        1
    """
    overrides = dict(overrides or {})
    _check_fields(overrides, "overrides")
    run_seeds = tuple(seeds) if seeds is not None else suite.seeds
    all_seeds = tuple(dict.fromkeys((*run_seeds, *suite.selection_seeds)))
    plans = []
    for ds in suite.datasets:
        for arm in suite.arms:
            if arm.only is not None and ds.label not in arm.only:
                continue
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
                configs = {}
                for seed in all_seeds:
                    where = f"suite {suite.name!r}, dataset {ds.label!r}, arm {arm.label!r}"
                    try:
                        cfg = TrainConfig.from_dict({**merged, "seed": seed}).normalized()
                    except (ConfigError, TypeError) as exc:
                        raise ConfigError(f"{where}, grid point {params}: {exc}") from exc
                    configs[seed] = cfg
                key = configs[all_seeds[0]].run_name()
                if key in seen:
                    raise ConfigError(
                        f"suite {suite.name!r}, arm {arm.label!r}: grid points {seen[key]} and "
                        f"{params} give the same run on dataset {ds.label!r} (an option with no "
                        f"effect for this method is in the grid); remove it from the grid"
                    )
                seen[key] = params
                points.append(GridPoint(params=params, configs=configs))
            plans.append(ArmPlan(dataset=ds.label, arm=arm.label, points=tuple(points),
                                 follow=dict(arm.follow), compute=compute))
    return plans


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
