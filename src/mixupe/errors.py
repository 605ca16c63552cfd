"""The exception types of mixupe.

Every error the library raises on purpose derives from :class:`MixupeError` and also from the
built-in type a caller would expect (``ValueError``, ``FileNotFoundError``, ...), so both
``except MixupeError`` and ``except ValueError`` work. Messages name the bad value and the fix.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "CorruptDataError",
    "DataUnavailableError",
    "InputError",
    "MixupeError",
    "NonFiniteLossError",
    "RunError",
]


class MixupeError(Exception):
    """Base class of every error raised by mixupe itself."""


class ConfigError(MixupeError, ValueError):
    """An option has a bad value, or two options cannot be combined."""


class InputError(MixupeError, ValueError):
    """A tensor argument is malformed: shape, dtype, label range or non-finite values."""


class NonFiniteLossError(MixupeError, FloatingPointError):
    """A loss became NaN or infinite; training must stop (with a non-zero exit)."""


class DataUnavailableError(MixupeError, FileNotFoundError):
    """A data file or the package that ships it is missing.

    The message names the command that installs it.
    """


class CorruptDataError(MixupeError, ValueError):
    """A data file or cache is truncated or corrupted."""


class RunError(MixupeError, RuntimeError):
    """A run of a suite failed for a reason other than divergence (an exception in its worker,
    or a worker that died more often than it may be retried). The message names the run and
    its log file; ``outcome`` (when set by the runner) holds what the suite did."""

    def __init__(self, message: str, outcome: object = None) -> None:
        super().__init__(message)
        self.outcome = outcome

    def __reduce__(self) -> tuple[type, tuple[str, object]]:  # picklable across processes
        return (type(self), (str(self), self.outcome))
