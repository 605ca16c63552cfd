"""Import an optional package, or say how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

from mixupe.errors import DataUnavailableError


def require(module: str, advice: str) -> ModuleType:
    """Import ``module``; raise :class:`DataUnavailableError` with ``advice`` when it is missing.

    Example:
        >>> require("math", "unused").sqrt(4.0)
        2.0
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataUnavailableError(advice) from None
