"""The hyper-parameter selection protocol: best mean VALIDATION accuracy, never test.

One rule, used by the runner (what to run next) and by the report (what to show):

- A cell (dataset x arm) whose arm follows another (``follow = { alpha = "Mixup" }``) is
  restricted to the grid points at the followed arm's chosen values; until that arm has
  chosen, the cell waits.
- A cell with a single eligible point needs no selection: every reported seed runs it.
- Otherwise every eligible point runs with the selection seeds, and the point with the
  highest mean final-epoch validation accuracy over them is chosen. A point is eligible
  only when every selection run completed (a diverged run rules it out); no point is
  chosen while a selection run is missing or unfinished; ties go to the point listed first.
- The chosen point is reported over the seeds that are not selection seeds, so the numbers
  that chose it are not the numbers that judge it.

Example:
    >>> choose_point([[0.80, 0.82], [0.85, 0.83], None])
    1
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FIXED_PROTOCOL", "PROTOCOL", "Selection", "choose_point", "select_cell"]

PROTOCOL = (
    "Hyper-parameters are selected on the validation split: in each dataset and arm, every "
    "grid point is trained with the selection seeds, and the point with the best mean "
    "final-epoch validation accuracy over those seeds is chosen (a point with a diverged or "
    "unfinished selection run is not eligible; ties go to the first point in the grid; an arm "
    "with a single point needs no choice). An arm that follows another (e.g. MixupE taking "
    "Mixup's alpha) searches only its own keys at the other arm's chosen values. Reported "
    "numbers are TEST metrics of the chosen point over the reported seeds, which exclude the "
    "selection seeds wherever a choice was made (mean ± 95 % Student-t interval): at the "
    "final epoch, and at the epoch of best validation accuracy chosen on validation alone. "
    "Paired differences compare arms seed by seed."
)

FIXED_PROTOCOL = (
    "Reported numbers are TEST metrics over the reported seeds (mean ± 95 % Student-t "
    "interval): at the final epoch, and at the epoch of best validation accuracy chosen on "
    "validation alone. Paired differences compare arms seed by seed."
)


def choose_point(val_scores: Sequence[Sequence[float] | None]) -> int | None:
    """Index of the grid point with the best mean validation score, or None if none is eligible.

    ``val_scores[i]`` holds the final validation accuracies of point ``i`` over the selection
    seeds, or None when point ``i`` is not eligible (a selection run failed or is missing).
    """
    best, best_mean = None, -math.inf
    for i, scores in enumerate(val_scores):
        if scores is None or len(scores) == 0:
            continue
        mean = sum(scores) / len(scores)
        if mean > best_mean:
            best, best_mean = i, mean
    return best


@dataclass(frozen=True)
class Selection:
    """The state of one cell's selection.

    ``eligible``: indices of the points at the followed arms' choices (all points when the arm
    follows none; empty while a followed arm has not chosen). ``scores[i]``: mean selection
    validation accuracy of point ``i`` (NaN when not eligible or not complete). ``pending``:
    eligible points with a missing or unfinished selection run. ``chosen``: the chosen index,
    or None. ``selection_seeds`` are the seeds each eligible point runs with before the
    choice; ``reported_seeds`` those the chosen point is reported over.
    """

    eligible: tuple[int, ...]
    scores: tuple[float, ...]
    pending: int
    chosen: int | None
    selection_seeds: tuple[int, ...]
    reported_seeds: tuple[int, ...]
    waiting_for: tuple[str, ...] = ()  # followed arms that have not chosen yet

    @property
    def chose(self) -> bool:
        """Whether this cell chose among several points (then selection seeds are excluded)."""
        return len(self.eligible) > 1


def select_cell(params: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[int, str]], *,
                seeds: Sequence[int], selection_seeds: Sequence[int],
                status: Callable[[str], str], val_acc: Callable[[str], float | None],
                fixed: Mapping[str, Any] | None = None,
                waiting_for: Sequence[str] = ()) -> Selection:
    """Apply the protocol to one cell.

    ``params[i]`` and ``runs[i]`` (seed -> run name) describe grid point ``i``; ``status(name)``
    is "complete", "failed", "partial" or "missing"; ``val_acc(name)`` is a complete run's
    final validation accuracy. ``fixed``: the values of the followed keys that the followed
    arms chose; ``waiting_for``: followed arms that have not chosen yet (then nothing is
    eligible).

    >>> sel = select_cell([{"eta": 0.1}, {"eta": 1.0}], [{0: "a0", 5: "a5"}, {0: "b0", 5: "b5"}],
    ...                   seeds=[0], selection_seeds=[5], status=lambda n: "complete",
    ...                   val_acc=lambda n: {"a5": 0.7, "b5": 0.9}.get(n, 0.0))
    >>> sel.chosen, sel.reported_seeds
    (1, (0,))
    """
    fixed = dict(fixed or {})
    waiting = tuple(waiting_for)
    if waiting:
        eligible: tuple[int, ...] = ()
    else:
        eligible = tuple(i for i, p in enumerate(params)
                         if all(p.get(k) == v for k, v in fixed.items()))
    if len(eligible) <= 1:
        chosen = eligible[0] if eligible else None
        scores = [math.nan] * len(params)
        return Selection(eligible, tuple(scores), 0, chosen, (), tuple(seeds), waiting)
    sel_seeds = tuple(selection_seeds)
    reported = tuple(s for s in seeds if s not in sel_seeds)
    scores = [math.nan] * len(params)
    eligible_scores: list[list[float] | None] = []
    pending = 0
    for i in eligible:
        names = [runs[i][s] for s in sel_seeds]
        states = [status(n) for n in names]
        if any(st in ("missing", "partial") for st in states):
            pending += 1
        vals = [val_acc(n) if st == "complete" else None for n, st in zip(names, states,
                                                                           strict=True)]
        ok = all(isinstance(v, int | float) and math.isfinite(v) for v in vals)
        good = [float(v) for v in vals] if ok and vals else None  # type: ignore[arg-type]
        eligible_scores.append(good)
        if good:
            scores[i] = sum(good) / len(good)
    pick = None if pending else choose_point(eligible_scores)
    chosen = None if pick is None else eligible[pick]
    return Selection(eligible, tuple(scores), pending, chosen, sel_seeds, reported)
