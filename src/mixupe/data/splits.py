"""Split containers (tensor, graph), the Dataset record, stratified splits and standardisation.

Every random draw here comes from an explicit ``numpy.random.Generator`` built from the
caller's seed, so the same seed gives the same split on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from mixupe.errors import ConfigError, CorruptDataError, InputError

__all__ = [
    "Dataset",
    "GraphSplit",
    "Standardiser",
    "TensorSplit",
    "encode_labels",
    "make_graph_dataset",
    "stratified_indices",
    "stratified_subset",
    "train_val_test_indices",
]


@dataclass(frozen=True)
class TensorSplit:
    """One split of a tensor dataset: ``x`` (N, ...) float32 and ``y`` (N,) int64.

    Example:
        >>> s = TensorSplit(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]))
        >>> len(s), s.x.shape
        (4, torch.Size([4, 3]))
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.x, torch.Tensor) or not isinstance(self.y, torch.Tensor):
            raise InputError(
                f"TensorSplit needs tensors, got x={type(self.x).__name__}, "
                f"y={type(self.y).__name__}; convert with torch.as_tensor first"
            )
        if self.x.dtype != torch.float32:
            raise InputError(f"TensorSplit.x must be float32, got {self.x.dtype}; use x.float()")
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise InputError(
                f"TensorSplit.y must be a 1-D int64 tensor, got {self.y.dtype} with shape "
                f"{tuple(self.y.shape)}; use y.long().reshape(-1)"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise InputError(
                f"TensorSplit has {self.x.shape[0]} inputs but {self.y.shape[0]} labels; "
                "pass x and y with the same first dimension"
            )

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class GraphSplit:
    """One split of a graph dataset: a list of PyG ``Data`` objects (each with ``.y``).

    ``y`` is the (N,) int64 tensor of the graph labels, in the order of ``graphs``.
    """

    graphs: list[Any]
    y: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        labels = [int(g.y.reshape(-1)[0]) for g in self.graphs]
        object.__setattr__(self, "y", torch.tensor(labels, dtype=torch.int64))

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> Any:
        return self.graphs[index]


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: three splits and the metadata trainers and reports need.

    Attributes:
        name: registry name, e.g. ``"letter"``.
        train, val, test: the splits (``TensorSplit`` or ``GraphSplit``); they never overlap.
        num_classes: number of classes K (labels are 0..K-1).
        domain: one of ``"images"``, ``"tabular"``, ``"speech"``, ``"graphs"``.
        input_shape: shape of ONE sample (graphs: ``(num_node_features,)``).
        source: where the data came from (file paths or package).
        info: free-form extras (feature names, standardisation statistics, ...).
    """

    name: str
    train: TensorSplit | GraphSplit
    val: TensorSplit | GraphSplit
    test: TensorSplit | GraphSplit
    num_classes: int
    domain: str
    input_shape: tuple[int, ...]
    source: str
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, domain={self.domain!r}, train={len(self.train)}, "
            f"val={len(self.val)}, test={len(self.test)}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape})"
        )


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"{name}={value!r} must lie strictly between 0 and 1, e.g. 0.1")


def stratified_indices(
    labels: np.ndarray, fraction: float, *, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(len(labels))`` into (rest, held_out), held_out ~ ``fraction`` per class.

    Every class with at least two members keeps at least one member on each side.
    Both index arrays are sorted.

    Example:
        >>> y = np.array([0] * 10 + [1] * 10)
        >>> rest, held = stratified_indices(y, 0.2, rng=np.random.default_rng(0))
        >>> len(held), len(rest)
        (4, 16)
    """
    _check_fraction("fraction", fraction)
    labels = np.asarray(labels)
    held: list[np.ndarray] = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        k = round(fraction * len(members))
        k = min(max(k, 1), len(members) - 1) if len(members) >= 2 else 0
        held.append(members[:k])
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def train_val_test_indices(
    labels: np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Stratified train/val(/test) indices; fractions are of the whole set.

    With ``test_fraction=None`` (the source has an official test split) only val is drawn.
    """
    _check_fraction("val_fraction", val_fraction)
    rng = np.random.default_rng(seed)
    test_idx = None
    pool = np.arange(len(labels))
    if test_fraction is not None:
        _check_fraction("test_fraction", test_fraction)
        if val_fraction + test_fraction >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction = {val_fraction + test_fraction} leaves no "
                "training data; choose fractions that sum to less than 1"
            )
        rest, test_idx = stratified_indices(labels, test_fraction, rng=rng)
        pool = rest
        val_fraction = val_fraction / (1.0 - test_fraction)
    rest, val_local = stratified_indices(labels[pool], val_fraction, rng=rng)
    return pool[rest], pool[val_local], test_idx


def stratified_subset(labels: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random subset of ``size`` items (for quick runs)."""
    n = len(labels)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ConfigError(f"subset={size!r} must be a positive integer number of samples")
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng([seed, 1])
    _, held = stratified_indices(labels, size / n, rng=rng)
    return held


class Standardiser:
    """Per-feature (or per-channel) mean and std, fitted on the training split only.

    ``axes`` are the axes averaged over (0 = samples); the others keep their own statistics.
    A feature with zero spread gets std 1 so it maps to 0 rather than to NaN.

    Example:
        >>> s = Standardiser.fit(np.array([[0.0, 1.0], [2.0, 1.0]]), axes=(0,))
        >>> s.apply(np.array([[1.0, 1.0]])).tolist()
        [[0.0, 0.0]]
    """

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean = mean
        self.std = std

    @classmethod
    def fit(cls, x: np.ndarray, *, axes: Sequence[int]) -> Standardiser:
        # float64 accumulation without a float64 copy of the whole array.
        mean = np.mean(x, axis=tuple(axes), keepdims=True, dtype=np.float64)
        std = np.std(x, axis=tuple(axes), keepdims=True, dtype=np.float64)
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean, std)

    def apply(self, x: np.ndarray) -> np.ndarray:
        out = np.asarray(x, dtype=np.float32) - self.mean.astype(np.float32)
        out /= self.std.astype(np.float32)
        return out


def tensor_split(x: np.ndarray, y: np.ndarray) -> TensorSplit:
    """A TensorSplit from numpy arrays (copies into contiguous float32 / int64 tensors)."""
    return TensorSplit(
        torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64)),
    )


def check_finite(name: str, x: np.ndarray, source: str) -> None:
    """Raise InputError if a loaded feature array holds NaN or inf."""
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise InputError(
            f"dataset {name!r} from {source} has {bad} non-finite feature values; "
            "clean the file (remove or impute missing values) and load it again"
        )


def make_tensor_dataset(
    *,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    official_test: tuple[np.ndarray, np.ndarray] | None,
    num_classes: int,
    domain: str,
    source: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    subset: int | None,
    standardise_axes: Sequence[int],
    info: dict[str, Any] | None = None,
) -> Dataset:
    """Split raw arrays, standardise with training statistics, and wrap them as a Dataset.

    ``official_test``: the source's own test split (then only val is drawn from ``x``).
    ``standardise_axes``: axes averaged for the statistics, e.g. ``(0,)`` per feature for
    tables, ``(0, 2, 3)`` per channel for (N, C, H, W) images.
    ``subset``: keep only a stratified random subset of that many training samples.
    """
    check_finite(name, x, source)
    train_idx, val_idx, test_idx = train_val_test_indices(
        y, seed=seed, val_fraction=val_fraction,
        test_fraction=None if official_test is not None else test_fraction,
    )
    if subset is not None:
        train_idx = train_idx[stratified_subset(y[train_idx], subset, seed=seed)]
    if official_test is not None:
        x_test, y_test = official_test
        check_finite(name, x_test, source)
    else:
        assert test_idx is not None  # internal invariant: drawn above
        x_test, y_test = x[test_idx], y[test_idx]
    x_train = x[train_idx]
    scaler = Standardiser.fit(x_train, axes=standardise_axes)
    extra = dict(info or {})
    extra["standardisation"] = {"mean": scaler.mean.squeeze(), "std": scaler.std.squeeze()}
    extra["indices"] = {"train": train_idx, "val": val_idx}
    if test_idx is not None:
        extra["indices"]["test"] = test_idx
    return Dataset(
        name=name,
        train=tensor_split(scaler.apply(x_train), y[train_idx]),
        val=tensor_split(scaler.apply(x[val_idx]), y[val_idx]),
        test=tensor_split(scaler.apply(x_test), y_test),
        num_classes=num_classes,
        domain=domain,
        input_shape=tuple(int(d) for d in x.shape[1:]),
        source=source,
        info=extra,
    )


MISSING_LABELS = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})


def encode_labels(
    raw: Sequence[str], *, where: str = "the label column", first_line: int | None = None
) -> tuple[np.ndarray, list[str]]:
    """Map label strings to 0..K-1; numeric labels sort numerically, others alphabetically.

    Numeric labels are compared as numbers, so ``"0"`` and ``"0.0"`` are one class (named by
    its first spelling). A missing label (empty, ``nan``, ``NA``, ``null``, ``None``, ``?``)
    raises :class:`CorruptDataError` naming ``where`` and the first such entry: its file line
    when ``first_line`` (the line of entry 0) is given, else its index from 0.

    Example:
        >>> y, classes = encode_labels(["10", "9", "10.0"])
        >>> y.tolist(), classes
        ([1, 0, 1], ['9', '10'])
    """
    texts = [str(v).strip() for v in raw]
    bad = [i for i, v in enumerate(texts) if v.lower() in MISSING_LABELS]
    if bad:
        at = f"line {first_line + bad[0]}" if first_line is not None else f"entry {bad[0]}"
        raise CorruptDataError(
            f"{where} has {len(bad)} missing label(s), the first {texts[bad[0]]!r} at {at}; a "
            "missing label is not a class: fill those labels or remove their rows"
        )
    try:
        values = [float(v) for v in texts]
    except ValueError:
        classes = sorted(set(texts))
        index = {c: i for i, c in enumerate(classes)}
        return np.fromiter((index[v] for v in texts), np.int64, count=len(texts)), classes
    spelling: dict[float, str] = {}
    for value, text in zip(values, texts, strict=True):
        spelling.setdefault(value, text)
    order = sorted(spelling)
    rank = {v: i for i, v in enumerate(order)}
    y = np.fromiter((rank[v] for v in values), np.int64, count=len(values))
    return y, [spelling[v] for v in order]


def make_graph_dataset(
    *,
    name: str,
    graphs: Sequence[Any],
    num_classes: int,
    input_shape: tuple[int, ...],
    source: str,
    seed: int,
    val_fraction: float,
    test_fraction: float,
    subset: int | None,
    info: dict[str, Any] | None = None,
) -> Dataset:
    """Stratified train/val/test splits of PyG graphs (each with a ``y`` label) drawn with ``seed``.

    Graph features are used as they are (no standardisation).
    """
    labels = np.array([int(g.y.reshape(-1)[0]) for g in graphs], dtype=np.int64)
    train_idx, val_idx, test_idx = train_val_test_indices(
        labels, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction
    )
    assert test_idx is not None  # internal invariant: drawn since test_fraction is given
    if subset is not None:
        train_idx = train_idx[stratified_subset(labels[train_idx], subset, seed=seed)]
    extra = dict(info or {})
    extra["indices"] = {"train": train_idx, "val": val_idx, "test": test_idx}
    return Dataset(
        name=name,
        train=GraphSplit([graphs[i] for i in train_idx]),
        val=GraphSplit([graphs[i] for i in val_idx]),
        test=GraphSplit([graphs[i] for i in test_idx]),
        num_classes=num_classes,
        domain="graphs",
        input_shape=input_shape,
        source=source,
        info=extra,
    )
