"""Per-bin reliability data of a finished run, recomputed from its final checkpoint.

The engine's result.json holds the ECE but not the per-bin counts a reliability diagram
needs. When ``"reliability"`` is absent from the test metrics, the report rebuilds the
run's model from ``config.json``, loads the final-epoch weights from ``checkpoint.pt``,
evaluates the test split and bins the confidences with the engine's own
:func:`~mixupe.engine.metrics.calibration_bins`. The result is used only if its ECE equals
the ECE the engine recorded, so a drift between this reader and the engine is caught
instead of plotted.

Example:
    >>> from mixupe.bench.rundirs import RunRecord
    >>> from pathlib import Path
    >>> recompute_reliability(RunRecord("x", Path("nowhere"), "missing")) is None
    True
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from mixupe.bench.rundirs import RunRecord

__all__ = ["recompute_reliability"]

log = logging.getLogger("mixupe.bench")

ECE_TOLERANCE = 1e-4


def _dataset(cfg: Any, cache: dict[Any, Any]) -> Any:
    import mixupe.data

    key = (cfg.dataset, cfg.data_options)
    if key not in cache:
        # The engine loads every run's data with the loader's default split seed.
        cache[key] = mixupe.data.load(cfg.dataset, **dict(cfg.data_options))
    return cache[key]


def recompute_reliability(run: RunRecord, *, cache: dict[Any, Any] | None = None
                          ) -> dict[str, list[float]] | None:
    """``{"conf", "acc", "count"}`` per confidence bin on the test split, or None.

    None when the run is not complete, its checkpoint or data cannot be read, or the
    recomputed ECE disagrees with the recorded one. ``cache`` keeps loaded datasets
    between calls.
    """
    ckpt_path = run.path / "checkpoint.pt"
    recorded = run.final("test").get("ece")
    if run.status != "complete" or not ckpt_path.is_file() or not isinstance(recorded, float):
        return None
    try:
        import mixupe.data
        import mixupe.models
        from mixupe.engine.checkpoint import load_checkpoint
        from mixupe.engine.config import TrainConfig
        from mixupe.engine.metrics import calibration_bins, ece_from_bins

        cfg = TrainConfig.from_dict(run.config)
        ds = _dataset(cfg, cache if cache is not None else {})
        model = mixupe.models.build(cfg.model, input_shape=ds.input_shape,
                                    num_classes=ds.num_classes, **dict(cfg.model_options))
        model.load_state_dict(load_checkpoint(ckpt_path, map_location="cpu")["model"])
        model.eval()
        logits, labels = [], []
        with torch.no_grad():
            for x, y in mixupe.data.batches(ds.test, batch_size=512, shuffle=False):
                logits.append(model(x).double())
                labels.append(y)
        bins = calibration_bins(torch.cat(logits), torch.cat(labels), cfg.ece_bins)
    except Exception as exc:  # a report must not die on one unreadable run
        log.warning("no reliability data for %s: %s", run.name, exc)
        return None
    ece = ece_from_bins(bins)
    if not math.isclose(ece, recorded, abs_tol=ECE_TOLERANCE):
        log.warning("no reliability data for %s: recomputed ECE %.6f differs from the "
                    "recorded %.6f", run.name, ece, recorded)
        return None
    count, conf_sum, correct_sum = (row.tolist() for row in bins)
    return {
        "count": count,
        "conf": [c / n if n else math.nan for c, n in zip(conf_sum, count, strict=True)],
        "acc": [a / n if n else math.nan for a, n in zip(correct_sum, count, strict=True)],
    }
