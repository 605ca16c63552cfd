"""mixupe: Mixup-family objectives for PyTorch, with every MixupE variant."""

from __future__ import annotations

from mixupe.errors import (
    ConfigError,
    CorruptDataError,
    DataUnavailableError,
    InputError,
    MixupeError,
    NonFiniteLossError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CorruptDataError",
    "DataUnavailableError",
    "InputError",
    "MixupeError",
    "NonFiniteLossError",
    "__version__",
]
