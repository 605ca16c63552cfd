"""Measuring the step-time ratio that an ``equal_compute`` arm stretches its schedule by.

A config's training cost per step is measured as the engine runs it, in CPU time, by a
difference: the process CPU time of a short run (``epochs[0]`` epochs) is subtracted from
that of a longer one (``epochs[1]``), and the result divided by the difference of their
``train_steps``. Both runs validate only at their last epoch and evaluate the same test set
once, so data loading, model building, that validation and the end-of-run evaluation cancel;
what is left is the training steps (with their per-epoch bookkeeping). CPU time, unlike
wall time, is hardly changed by other processes sharing the cores. The ratio of arm A to
arm B is the median over ``repeats`` interleaved repeats (A, B, A, B, ...) of A's seconds
per step over B's.

The suites store the measured ratio as a fixed number (run names then never depend on the
machine); ``benchmarks/compute_ratio.py`` runs this measurement and prints the figures.

Example:
    >>> per_step_seconds((1.5, 64), (4.5, 320))
    0.01171875
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mixupe.bench.rundirs import read_run
from mixupe.engine.config import TrainConfig
from mixupe.errors import ConfigError

__all__ = ["StepRatio", "measure_step_ratio", "per_step_seconds"]


def per_step_seconds(short: tuple[float, int], long: tuple[float, int]) -> float:
    """Seconds per step from two runs' (seconds, train_steps): the difference quotient."""
    (t0, n0), (t1, n1) = short, long
    if n1 <= n0:
        raise ConfigError(f"the long run has {n1} steps and the short one {n0}; the long run "
                          f"needs more epochs (e.g. epochs=(2, 10))")
    return (t1 - t0) / (n1 - n0)


@dataclass(frozen=True)
class StepRatio:
    """The measured ratio (median of the per-repeat ratios) and each repeat's seconds/step."""

    ratio: float
    seconds_a: tuple[float, ...]
    seconds_b: tuple[float, ...]

    @property
    def per_repeat(self) -> tuple[float, ...]:
        """A's seconds per step over B's, repeat by repeat."""
        return tuple(a / b for a, b in zip(self.seconds_a, self.seconds_b, strict=True))


def _timed_run(cfg: TrainConfig, epochs: int, root: str, train_fn: Callable[..., Any],
               clock: Callable[[], float]) -> tuple[float, int]:
    short = dataclasses.replace(cfg, epochs=epochs, warmup_epochs=0, schedule="cosine",
                                milestones=(), off_epoch=None, val_every=epochs)
    start = clock()
    train_fn(short, runs_root=root, progress=False)
    spent = clock() - start
    rec = read_run(root, short.run_name())
    if rec.status != "complete":
        raise ConfigError(f"the timing run {short.run_name()} ended {rec.status}; measure with "
                          f"a configuration that trains")
    return spent, int(rec.result["train_steps"])


def measure_step_ratio(config_a: TrainConfig, config_b: TrainConfig, *,
                       epochs: tuple[int, int] = (2, 10), repeats: int = 3,
                       train_fn: Callable[..., Any] | None = None,
                       clock: Callable[[], float] = time.process_time) -> StepRatio:
    """A's training seconds per step over B's (see the module docstring), in a temp folder.

    Repeat ``r`` runs both configs with seed ``seed + r``, after one untimed short run of
    each (seed ``seed + repeats``) that absorbs first-call costs; warm-up epochs and
    milestones are dropped (the schedule does not change a step's cost). ``train_fn`` replaces
    :func:`mixupe.engine.train` (same signature); ``clock`` is the timer (process CPU time).
    """
    lo, hi = epochs
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo < hi):
        raise ConfigError(f"epochs={epochs!r} must be two integers 1 <= short < long, e.g. "
                          f"(2, 10)")
    if not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats={repeats!r} must be a positive integer, e.g. 3")
    if train_fn is None:
        from mixupe.engine import train as train_fn
    secs: dict[str, list[float]] = {"a": [], "b": []}
    with tempfile.TemporaryDirectory(prefix="mixupe-ratio-") as root:
        for cfg in (config_a, config_b):  # warm-up: first-call costs (caches, imports) go here
            _timed_run(dataclasses.replace(cfg, seed=cfg.seed + repeats), lo, root, train_fn,
                       clock)
        for repeat in range(repeats):
            for key, cfg in (("a", config_a), ("b", config_b)):
                cfg = dataclasses.replace(cfg, seed=cfg.seed + repeat)
                secs[key].append(per_step_seconds(_timed_run(cfg, lo, root, train_fn, clock),
                                                  _timed_run(cfg, hi, root, train_fn, clock)))
    per = [a / b for a, b in zip(secs["a"], secs["b"], strict=True)]
    return StepRatio(ratio=statistics.median(per), seconds_a=tuple(secs["a"]),
                     seconds_b=tuple(secs["b"]))
