"""Number formats of the benchmark report: intervals, paired differences, p-values, costs.

One format per kind of figure, shared by every table of :mod:`mixupe.bench.report` and by
:mod:`mixupe.bench.trend`, so a figure reads the same wherever it is printed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mixupe.bench.summary import Paired

__all__ = ["chosen_text", "extras_text", "flat_word", "fmt_cost", "fmt_duration", "fmt_gain",
           "fmt_p", "fmt_paired", "fmt_params", "fmt_value", "holm_pair", "met_word", "pct"]


def pct(ci: tuple[float, float] | None, scale: float = 100.0, digits: int = 1) -> str:
    if ci is None or not math.isfinite(ci[0]):
        return "–"
    mean, half = ci
    if not math.isfinite(half):
        return f"{mean * scale:.{digits}f}"
    return f"{mean * scale:.{digits}f} ± {half * scale:.{digits}f}"


def fmt_params(params: Mapping[str, Any]) -> str:
    if not params:
        return "–"
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def fmt_duration(seconds: float) -> str:
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def fmt_paired(paired: Paired | None, scale: float = 100.0, digits: int = 2) -> str:
    """``+0.26 ± 0.17``; bold where the 95 % interval excludes zero.

    >>> fmt_paired(Paired(0.005, 0.0, 5, math.nan, degenerate=True))
    '+0.50 (same in all 5 pairs)'
    """
    if paired is None or not math.isfinite(paired.mean):
        return "–"
    text = f"{paired.mean * scale:+.{digits}f}"
    if paired.degenerate:
        return text + f" (same in all {paired.n} pairs)"
    if not math.isfinite(paired.half):
        return text + f" (n={paired.n})"
    text += f" ± {paired.half * scale:.{digits}f}"
    return f"**{text}**" if paired.excludes_zero else text


def fmt_cost(wall_s: float, base_s: float) -> str:
    """Mean wall time of a reported run, and its ratio to the baseline arm's (seconds alone,
    to a tenth, where there is no baseline)."""
    if not math.isfinite(wall_s):
        return "–"
    if not math.isfinite(base_s) or base_s <= 0:
        return f"{wall_s:.1f}"
    return f"{wall_s:.0f} ({wall_s / base_s:.2f}x)"


def fmt_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def fmt_value(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def fmt_gain(gain: tuple[float, float]) -> str:
    mean, half = gain
    if not math.isfinite(mean):
        return "–"
    return f"{mean * 100:+.2f}" + (f" ± {half * 100:.2f}" if math.isfinite(half) else "")


def holm_pair(r: Paired | None) -> str:
    if r is None:
        return "–"
    return f"{fmt_p(r.p_dataset)} / {fmt_p(r.p_holm)}"


def flat_word(cell: Any) -> str:
    flat = cell.flat
    return "–" if flat is None else "flat" if flat else "rising" if cell.late_gain[0] > 0 \
        else "falling"


def met_word(row: Any) -> str:
    if row.met:
        return "yes"
    pending = row.diff is None or row.a.flat is None or row.b.flat is None
    return "pending" if pending else "no"


def chosen_text(cell: Any) -> str:
    if cell.waiting_for:
        return f"waits for {', '.join(cell.waiting_for)}"
    if cell.chosen is None and cell.selection_pending:
        n = len(cell.grid) or cell.n_points
        return f"selecting ({n - cell.selection_pending}/{n} points done)"
    return fmt_params(cell.params)


def extras_text(extra: Mapping[str, float]) -> str:
    parts = []
    if "reg_ratio" in extra:
        parts.append(f"reg_ratio {extra['reg_ratio']:.3g}")
    if "selected_frac" in extra:
        parts.append(f"selected_frac {extra['selected_frac']:.3g}")
    if "rescale_all" in extra:
        parts.append(f"rescale factor {extra['rescale_all']:.3g} (epoch means "
                     f"{extra['rescale_min']:.3g}–{extra['rescale_max']:.3g}"
                     + (f"; within the last epoch sd {extra['rescale_sd']:.2g})"
                        if "rescale_sd" in extra else ")"))
    return ", ".join(parts)
