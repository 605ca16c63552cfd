"""Datasets in four domains (images, tabular, speech, graphs) and in-memory batching.

Example:
    >>> import mixupe.data
    >>> ds = mixupe.data.load("digits", seed=0)
    >>> ds.domain, ds.num_classes
    ('images', 10)
    >>> x, y = next(mixupe.data.batches(ds.train, batch_size=32, shuffle=False))
    >>> tuple(x.shape)
    (32, 1, 8, 8)
"""

from __future__ import annotations

from mixupe.data.augment import crop_flip
from mixupe.data.batching import batches, num_batches
from mixupe.data.registry import describe, load, names, prepare
from mixupe.data.splits import Dataset, GraphSplit, TensorSplit

__all__ = [
    "Dataset",
    "GraphSplit",
    "TensorSplit",
    "batches",
    "crop_flip",
    "describe",
    "load",
    "names",
    "num_batches",
    "prepare",
]
