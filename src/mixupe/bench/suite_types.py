"""The parsed form of a benchmark suite (see :mod:`mixupe.bench.suites`): datasets, arms,
hypotheses, and the grid points of each dataset x arm cell with their training configs."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["STRETCHED", "ArmPlan", "ArmSpec", "DatasetSpec", "EqualCompute", "GridPoint",
           "Hypothesis", "Suite", "stretch_schedule"]


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
