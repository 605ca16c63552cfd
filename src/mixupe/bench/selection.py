"""The hyper-parameter selection protocol: best mean VALIDATION accuracy, never test.

For each dataset x arm, every grid point runs with the selection seeds; the point with the
highest mean final-epoch validation accuracy over those seeds is chosen. A point is eligible
only when every selection seed completed (a diverged or unfinished run rules it out). Ties go
to the point listed first in the grid. An arm with a single point needs no selection: all
its seeds run and the seeds that completed are reported. The arm's reported test numbers are
the final-epoch test metrics of the chosen point over all seeds.

Example:
    >>> choose_point([[0.80, 0.82], [0.85, 0.83], None])
    1
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["PROTOCOL", "choose_point"]

PROTOCOL = (
    "Hyper-parameters are selected on the validation split: for each dataset and arm, every "
    "grid point is trained with the selection seeds, and the point with the best mean "
    "final-epoch validation accuracy over those seeds is chosen (a point with a diverged or "
    "unfinished selection run is not eligible; ties go to the first point in the grid; an arm "
    "with a single point is reported over the seeds that completed). "
    "Reported numbers are final-epoch TEST metrics of the chosen point over all seeds "
    "(mean ± 95 % Student-t interval). Paired differences compare arms seed by seed against "
    "the baseline arm's chosen point."
)


def choose_point(val_scores: Sequence[Sequence[float] | None]) -> int | None:
    """Index of the grid point with the best mean validation score, or None if none is eligible.

    ``val_scores[i]`` holds the final validation accuracies of point ``i`` over the selection
    seeds, or None when point ``i`` is not eligible (a selection run failed or is missing).
    """
    best, best_mean = None, float("-inf")
    for i, scores in enumerate(val_scores):
        if scores is None or len(scores) == 0:
            continue
        mean = sum(scores) / len(scores)
        if mean > best_mean:
            best, best_mean = i, mean
    return best
