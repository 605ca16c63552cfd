"""Fashion-MNIST superpixel graphs (SLIC), built once and cached on disk.

Each image is cut into about ``n_segments`` SLIC superpixels (scikit-image); a node carries
its mean intensity and the row and column of its centroid (divided by the image size), and
two nodes are joined when their superpixels touch (4-neighbourhood), in both directions.
Node features are standardised with statistics of the training graphs' nodes.

The cache is one ``.npz`` file (no pickle) plus a JSON manifest, both named by a hash of the
build parameters and of the source files' content (SHA-256). The manifest, written last,
records the parameters, the byte size and the SHA-256 of the ``.npz``; a cache whose manifest
is missing, disagrees or does not match the file is rebuilt (with a warning), never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mixupe.atomic import atomic_write
from mixupe.data.images import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    FASHION_MNIST_INSTALL,
    read_idx,
)
from mixupe.data.images import _find_idx as find_idx
from mixupe.data.sources import cache_dir as default_cache_dir
from mixupe.data.splits import (
    Dataset,
    GraphSplit,
    Standardiser,
    stratified_subset,
    train_val_test_indices,
)
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = ["build_superpixel_arrays", "image_to_superpixels", "load_superpixels", "prepare"]

logger = logging.getLogger(__name__)

BUILDER_VERSION = 1
NODE_FEATURES = 3
SKIMAGE_INSTALL = "pip install scikit-image"


def image_to_superpixels(
    image: np.ndarray, *, n_segments: int, compactness: float
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) image in [0, 1] -> node features (n, 3) and undirected edges (2, 2m).

    Example:
        >>> img = np.zeros((28, 28)); img[:, 14:] = 1.0
        >>> x, e = image_to_superpixels(img, n_segments=4, compactness=0.25)
        >>> x.shape[1], bool((e[0] != e[1]).all())
        (3, True)
    """
    try:
        from skimage.segmentation import slic
    except ImportError as exc:
        raise DataUnavailableError(
            f"superpixel graphs need scikit-image; install it with `{SKIMAGE_INSTALL}`"
        ) from exc
    h, w = image.shape
    segments = slic(
        image.astype(np.float64), n_segments=n_segments, compactness=compactness,
        channel_axis=None, start_label=0,
    )
    # Relabel to 0..n-1 (SLIC may skip labels).
    _, segments = np.unique(segments, return_inverse=True)
    segments = segments.reshape(h, w)
    n = int(segments.max()) + 1
    flat = segments.ravel()
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    rows, cols = np.indices((h, w))
    features = np.stack(
        [
            np.bincount(flat, weights=image.ravel(), minlength=n) / counts,
            np.bincount(flat, weights=rows.ravel(), minlength=n) / counts / h,
            np.bincount(flat, weights=cols.ravel(), minlength=n) / counts / w,
        ],
        axis=1,
    ).astype(np.float32)
    pairs = np.concatenate(
        [
            np.stack([segments[:, :-1].ravel(), segments[:, 1:].ravel()], axis=1),
            np.stack([segments[:-1, :].ravel(), segments[1:, :].ravel()], axis=1),
        ]
    )
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    pairs = np.unique(np.concatenate([pairs, pairs[:, ::-1]]), axis=0)
    return features, pairs.T.astype(np.int64)


def build_superpixel_arrays(
    images: np.ndarray, *, n_segments: int, compactness: float
) -> dict[str, np.ndarray]:
    """Concatenated graphs of many images: node features, edges and per-graph counts."""
    xs, edges, node_counts, edge_counts = [], [], [], []
    for image in images:
        x, e = image_to_superpixels(image, n_segments=n_segments, compactness=compactness)
        xs.append(x)
        edges.append(e)
        node_counts.append(x.shape[0])
        edge_counts.append(e.shape[1])
    return {
        "x": np.concatenate(xs) if xs else np.zeros((0, NODE_FEATURES), np.float32),
        "edge_index": np.concatenate(edges, axis=1) if edges else np.zeros((2, 0), np.int64),
        "node_counts": np.asarray(node_counts, dtype=np.int64),
        "edge_counts": np.asarray(edge_counts, dtype=np.int64),
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _source_files(root: str | os.PathLike[str] | None) -> dict[str, Path]:
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    paths = {key: find_idx(folder, stem) for key, stem in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataUnavailableError(
            f"Fashion-MNIST files {missing} not found in {str(folder)!r}; {FASHION_MNIST_INSTALL}"
        )
    return {k: p for k, p in paths.items() if p is not None}


def _cache_params(
    sources: dict[str, Path], *, n_segments: int, compactness: float, limit: int | None
) -> dict[str, Any]:
    return {
        "builder_version": BUILDER_VERSION,
        "n_segments": n_segments,
        "compactness": compactness,
        "limit": limit,
        # Keyed on the files' content: a replaced file of the same size gets its own cache,
        # and a moved or copied one reuses it.
        "sources": {k: _sha256(p) for k, p in sorted(sources.items())},
    }


def _cache_paths(folder: Path, params: dict[str, Any]) -> tuple[Path, Path]:
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]
    stem = f"fashion-mnist-superpixels-{key}"
    return folder / f"{stem}.npz", folder / f"{stem}.json"


def _valid_cache(data_path: Path, manifest_path: Path, params: dict[str, Any]) -> bool:
    """True only when the manifest matches ``params`` and the file's size and SHA-256."""
    if not data_path.is_file() or not manifest_path.is_file():
        if data_path.is_file() or manifest_path.is_file():
            logger.warning("superpixel cache %s is incomplete; rebuilding it", data_path)
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        logger.warning("superpixel cache manifest %s is unreadable; rebuilding", manifest_path)
        return False
    if manifest.get("params") != json.loads(json.dumps(params)):
        logger.warning("superpixel cache %s was built with other parameters; rebuilding", data_path)
        return False
    if manifest.get("bytes") != data_path.stat().st_size or manifest.get("sha256") != _sha256(
        data_path
    ):
        logger.warning("superpixel cache %s does not match its manifest; rebuilding", data_path)
        return False
    return True


def _check_limit(limit: int | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit={limit!r} must be None (all images) or a positive integer")


def prepare(
    *,
    root: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    n_segments: int = 75,
    compactness: float = 0.25,
    limit: int | None = None,
) -> Path:
    """Build (or validate) the superpixel cache and return the path of its ``.npz`` file.

    ``limit``: build only the first ``limit`` images of each official split (train and test).
    """
    _check_limit(limit)
    if not isinstance(n_segments, int) or n_segments < 2:
        raise ConfigError(f"n_segments={n_segments!r} must be an integer >= 2, e.g. 75")
    if not compactness > 0:
        raise ConfigError(f"compactness={compactness!r} must be positive, e.g. 0.25")
    sources = _source_files(root)
    params = _cache_params(sources, n_segments=n_segments, compactness=compactness, limit=limit)
    folder = default_cache_dir(cache_dir)
    folder.mkdir(parents=True, exist_ok=True)
    data_path, manifest_path = _cache_paths(folder, params)
    if _valid_cache(data_path, manifest_path, params):
        return data_path
    manifest_path.unlink(missing_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "test"):
        images = read_idx(sources[f"{split}_images"])[:limit].astype(np.float32) / 255.0
        labels = read_idx(sources[f"{split}_labels"])[:limit].astype(np.int64)
        logger.info("building %d %s superpixel graphs", len(images), split)
        built = build_superpixel_arrays(images, n_segments=n_segments, compactness=compactness)
        arrays.update({f"{split}_{k}": v for k, v in built.items()})
        arrays[f"{split}_y"] = labels

    atomic_write(data_path, lambda f: np.savez(f, **arrays))
    manifest = {"params": params, "bytes": data_path.stat().st_size, "sha256": _sha256(data_path)}
    atomic_write(manifest_path, json.dumps(manifest, indent=1))
    return data_path


_REBUILD = ("it only holds graphs derived from the Fashion-MNIST files: move it away and "
            "mixupe.data.prepare('fashion-mnist-superpixels') builds it again")


def _read_cache(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptDataError(
            f"superpixel cache {str(path)!r} is unreadable ({exc}); {_REBUILD}"
        ) from exc
    for split in ("train", "test"):
        try:
            x, e = arrays[f"{split}_x"], arrays[f"{split}_edge_index"]
            nodes, edges = arrays[f"{split}_node_counts"], arrays[f"{split}_edge_counts"]
            y = arrays[f"{split}_y"]
        except KeyError as exc:
            raise CorruptDataError(
                f"superpixel cache {str(path)!r} lacks {exc}; {_REBUILD}"
            ) from exc
        if nodes.sum() != x.shape[0] or edges.sum() != e.shape[1] or len(nodes) != len(y):
            raise CorruptDataError(
                f"superpixel cache {str(path)!r} is inconsistent; {_REBUILD}"
            )
    return arrays


def _graphs(arrays: dict[str, np.ndarray], split: str, scaler: Standardiser) -> list[Any]:
    from torch_geometric.data import Data

    x = torch.from_numpy(scaler.apply(arrays[f"{split}_x"]))
    edge_index = torch.from_numpy(arrays[f"{split}_edge_index"].astype(np.int64))
    node_starts = np.concatenate([[0], np.cumsum(arrays[f"{split}_node_counts"])])
    edge_starts = np.concatenate([[0], np.cumsum(arrays[f"{split}_edge_counts"])])
    y = arrays[f"{split}_y"]
    return [
        Data(
            x=x[node_starts[i] : node_starts[i + 1]],
            edge_index=edge_index[:, edge_starts[i] : edge_starts[i + 1]],
            y=torch.tensor([int(y[i])], dtype=torch.int64),
        )
        for i in range(len(y))
    ]


def load_superpixels(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    n_segments: int = 75,
    compactness: float = 0.25,
    limit: int | None = None,
) -> Dataset:
    """Fashion-MNIST superpixel graphs; builds the cache on first use (about 0.5 ms per image)."""
    try:
        import torch_geometric  # noqa: F401
    except ImportError as exc:
        raise DataUnavailableError(
            "graph datasets need PyTorch Geometric; install it with `pip install torch_geometric`"
        ) from exc
    path = prepare(
        root=root, cache_dir=cache_dir, n_segments=n_segments, compactness=compactness,
        limit=limit,
    )
    arrays = _read_cache(path)
    train_idx, val_idx, _ = train_val_test_indices(
        arrays["train_y"], seed=seed, val_fraction=val_fraction, test_fraction=None
    )
    if subset is not None:
        train_idx = train_idx[stratified_subset(arrays["train_y"][train_idx], subset, seed=seed)]
    node_starts = np.concatenate([[0], np.cumsum(arrays["train_node_counts"])])
    train_nodes = np.concatenate(
        [np.arange(node_starts[i], node_starts[i + 1]) for i in train_idx]
    )
    scaler = Standardiser.fit(arrays["train_x"][train_nodes], axes=(0,))
    train_all = _graphs(arrays, "train", scaler)
    return Dataset(
        name="fashion-mnist-superpixels",
        train=GraphSplit([train_all[i] for i in train_idx]),
        val=GraphSplit([train_all[i] for i in val_idx]),
        test=GraphSplit(_graphs(arrays, "test", scaler)),
        num_classes=10,
        domain="graphs",
        input_shape=(NODE_FEATURES,),
        source=str(path),
        info={
            "indices": {"train": train_idx, "val": val_idx},
            "standardisation": {"mean": scaler.mean.squeeze(), "std": scaler.std.squeeze()},
        },
    )
