"""The statistics of the report, stated once: tests, the flatness rule, verdicts, outcomes.

Every comparison in the report is a paired difference over seeds, shown with its 95 %
Student-t interval, the two-sided paired t-test, the two-sided Wilcoxon signed-rank test
(exact, computed here, no approximation) and Holm-adjusted t p-values over a named family.
A prose verdict ("beats", "costs") is allowed only where the Holm-adjusted p-value is below
0.05 (equivalently: the interval at the adjusted level excludes zero) at the final epoch AND
at the best-validation epoch, with the same sign; everything else is "inconclusive".

Example:
    >>> round(wilcoxon_signed_rank([0.1, 0.2, 0.3, 0.4, 0.5]), 4)   # all 5 positive: 2 / 2^5
    0.0625
    >>> flat_rule(0.001, 0.0005)   # interval 0.05-0.15 pp: below the 0.2 pp margin
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from mixupe.errors import InputError

__all__ = ["ALPHA", "DIRECTIONS", "FLAT_MARGIN", "OUTCOMES", "VERDICTS", "flat_rule",
           "outcome", "side", "verdict", "wilcoxon_signed_rank"]

ALPHA = 0.05  # family-wise level of every adjusted statement
FLAT_MARGIN = 0.002  # 0.2 pp: a late gain whose interval lies below this is "flat"
VERDICTS = ("beats", "costs", "inconclusive")
OUTCOMES = ("confirmed", "not confirmed", "reversed", "pending")
# A pre-registered hypothesis "arm DIRECTION baseline" on the paired difference arm - baseline.
DIRECTIONS = (">", "<", ">=", "<=", "=")


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks 1..n of ``values`` with ties given their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def wilcoxon_signed_rank(differences: Sequence[float], *, tol: float = 1e-12) -> float:
    """Two-sided exact p-value of the Wilcoxon signed-rank test that the median is zero.

    Zero differences (|d| <= ``tol``) are dropped, as in Wilcoxon's original test; tied
    magnitudes get their average rank, and the null distribution of the positive rank sum is
    enumerated exactly for those ranks (every sign assignment equally likely), so ties need
    no normal approximation. NaN when no non-zero difference is left.

    >>> round(wilcoxon_signed_rank([1.0, -2.0, 3.0, 4.0]), 4)   # W+ = 8 of 10: P(|.| >= 8)
    0.375
    """
    d = [float(x) for x in differences]
    if not all(math.isfinite(x) for x in d):
        raise InputError(f"wilcoxon_signed_rank got non-finite differences {d}; drop "
                         f"failed runs first")
    d = [x for x in d if abs(x) > tol]
    if not d:
        return math.nan
    # magnitudes equal within tol count as ties (accuracies are multiples of 1/n_test)
    mags = [round(abs(x) / tol) * tol for x in d]
    doubled = [round(2 * r) for r in _ranks(mags)]  # average ranks are multiples of 1/2
    w_plus = sum(r for r, x in zip(doubled, d, strict=True) if x > 0)
    counts = {0: 1}
    for r in doubled:
        nxt = dict(counts)
        for s, c in counts.items():
            nxt[s + r] = nxt.get(s + r, 0) + c
        counts = nxt
    total = 2 ** len(d)
    low = sum(c for s, c in counts.items() if s <= w_plus) / total
    high = sum(c for s, c in counts.items() if s >= w_plus) / total
    return min(1.0, 2.0 * min(low, high))


def flat_rule(mean: float, half: float, *, margin: float = FLAT_MARGIN) -> bool | None:
    """Whether a late validation gain ``mean ± half`` (95 % interval over seeds) is flat.

    Flat when the interval includes zero or lies entirely below ``margin`` (0.2 pp); None
    when no interval exists (fewer than two seeds).

    >>> flat_rule(0.007, 0.002), flat_rule(0.004, 0.005), flat_rule(math.nan, math.nan)
    (False, True, None)
    """
    if not (math.isfinite(mean) and math.isfinite(half)):
        return None
    return (mean - half <= 0.0 <= mean + half) or mean + half < margin


def side(mean: float, p_adjusted: float, *, degenerate: bool = False) -> int:
    """+1 / -1 where the adjusted test puts the difference above / below zero, else 0."""
    if degenerate or not (math.isfinite(p_adjusted) and p_adjusted < ALPHA):
        return 0
    return 1 if mean > 0 else -1 if mean < 0 else 0


def verdict(final: tuple[float, float] | None, best: tuple[float, float] | None) -> str:
    """The prose word for a comparison: (mean, adjusted p) at the final and best epochs.

    "beats" / "costs" only when both epochs agree on a side after adjustment, else
    "inconclusive".

    >>> verdict((0.004, 0.001), (0.003, 0.02)), verdict((0.004, 0.001), (0.003, 0.2))
    ('beats', 'inconclusive')
    """
    if final is None or best is None:
        return "inconclusive"
    sides = {side(*final), side(*best)}
    if sides == {1}:
        return "beats"
    if sides == {-1}:
        return "costs"
    return "inconclusive"


def outcome(direction: str, final: int | None, best: int | None) -> str:
    """The outcome of one pre-registered comparison from its adjusted sides at both epochs.

    ``final`` / ``best``: :func:`side` of arm minus baseline at the final and best-validation
    epochs (None: not measured yet). ``>`` / ``<``: confirmed when both lie on the stated
    side, reversed when both lie on the other. ``>=`` / ``<=``: confirmed when neither lies on
    the forbidden side, reversed when both do. ``=``: confirmed when neither excludes zero,
    reversed when both exclude it on the same side. Everything else: "not confirmed".

    >>> outcome(">", 1, 1), outcome(">", 1, 0), outcome("<=", 0, -1), outcome("=", 1, 1)
    ('confirmed', 'not confirmed', 'confirmed', 'reversed')
    """
    if direction not in DIRECTIONS:
        raise InputError(f"direction {direction!r} is not one of {list(DIRECTIONS)}")
    if final is None or best is None:
        return "pending"
    both = {final, best}
    if direction in (">", "<"):
        want = 1 if direction == ">" else -1
        return ("confirmed" if both == {want} else "reversed" if both == {-want}
                else "not confirmed")
    if direction in (">=", "<="):
        forbidden = -1 if direction == ">=" else 1
        return ("confirmed" if forbidden not in both else "reversed" if both == {forbidden}
                else "not confirmed")
    return ("confirmed" if both == {0} else "reversed" if len(both) == 1
            else "not confirmed")
