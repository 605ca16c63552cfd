"""CIFAR-10 / CIFAR-100 from a user's folder in the standard python (pickle) format.

Expected layout (as extracted from the official archives): ``root/cifar-10-batches-py/``
with ``data_batch_1..5`` and ``test_batch``, or ``root/cifar-100-python/`` with ``train``
and ``test``. ``root`` may also be that inner folder itself. The files are pickles: only
load folders you trust.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from mixupe.data.splits import Dataset, make_tensor_dataset
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["load_cifar"]

_LAYOUT = {
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}
_URL = {
    10: "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    100: "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}


def _read_batch(path: Path, label_key: bytes, how_to_fix: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as handle:
            entry = pickle.load(handle, encoding="bytes")  # the user's own data folder
    except (OSError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} ({exc}); {how_to_fix}") from exc
    if not isinstance(entry, dict) or b"data" not in entry or label_key not in entry:
        raise CorruptDataError(
            f"{str(path)!r} lacks the keys b'data' and {label_key!r}; {how_to_fix}"
        )
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != labels.shape[0]:
        raise CorruptDataError(
            f"{str(path)!r} holds data {data.shape} and labels {labels.shape}, expected "
            f"(N, 3072) and (N,); {how_to_fix}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar(
    *,
    num_classes: int,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
) -> Dataset:
    """CIFAR-10 or CIFAR-100 (3x32x32) from ``root``; official test split, val drawn from train."""
    if num_classes not in _LAYOUT:
        raise ConfigError(f"num_classes={num_classes!r}: CIFAR has 10 or 100 classes")
    inner, train_files, test_files, label_key = _LAYOUT[num_classes]
    how_to_get = (
        f"download {_URL[num_classes]}, extract it and pass root= the folder that holds "
        f"{inner!r}"
    )
    if root is None:
        raise DataUnavailableError(f"CIFAR-{num_classes} is not packaged here; {how_to_get}")
    folder = Path(root)
    if (folder / inner).is_dir():
        folder = folder / inner
    missing = [f for f in train_files + test_files if not (folder / f).is_file()]
    if missing:
        raise DataUnavailableError(
            f"CIFAR-{num_classes} files {missing} not found in {str(folder)!r}; {how_to_get}"
        )
    fix = f"the file is truncated or corrupted; {how_to_get}"
    train = [_read_batch(folder / f, label_key, fix) for f in train_files]
    test = [_read_batch(folder / f, label_key, fix) for f in test_files]
    x = np.concatenate([b[0] for b in train]).astype(np.float32) / 255.0
    y = np.concatenate([b[1] for b in train])
    x_test = np.concatenate([b[0] for b in test]).astype(np.float32) / 255.0
    y_test = np.concatenate([b[1] for b in test])
    for labels in (y, y_test):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise CorruptDataError(
                f"CIFAR-{num_classes} labels in {str(folder)!r} lie outside 0..{num_classes - 1}; "
                f"{how_to_get}"
            )
    return make_tensor_dataset(
        name=f"cifar{num_classes}", x=x, y=y, official_test=(x_test, y_test),
        num_classes=num_classes, domain="images", source=str(folder), seed=seed,
        val_fraction=val_fraction, test_fraction=0.2, subset=subset, standardise_axes=(0, 2, 3),
    )
