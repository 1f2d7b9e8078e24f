"""The expected failures of the application: the user can fix each, and its message says how.

The command line prints any :class:`AppError` (and a
:class:`~flowkit.models.data.DatasetError`) as one ``error: ...`` line with exit code 2;
anything else is a bug and exits with 1. An :class:`Interrupted` command exits with
``128 + signal number``, the shell's convention (130 for SIGINT, 143 for SIGTERM).
"""

import signal

__all__ = [
    "AppError",
    "CheckpointError",
    "ConfigError",
    "Interrupted",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "RunFolderError",
]


class AppError(Exception):
    """Base class of the application's expected failures."""


class ConfigError(AppError, ValueError):
    """Settings that cannot work: a flag the model does not take, an image size the model cannot
    split, a device that is not there, a batch larger than the training set."""


class CheckpointError(AppError, ValueError):
    """A checkpoint that cannot be used: missing, truncated, corrupt, not a flowkit checkpoint,
    of another model than requested, or written by a newer flowkit."""


class RunFolderError(AppError, ValueError):
    """A run folder that cannot be used as asked: it exists (and neither ``--resume`` nor
    ``--overwrite`` was given), or it is missing what resuming or evaluating needs."""


class NonFiniteLossError(AppError, ArithmeticError):
    """Training produced a NaN or infinite loss or gradient norm; the message names the step
    and the last good checkpoint."""


class OutOfMemoryError(AppError, MemoryError):
    """The device (or the host) ran out of memory; the message names the flags that use less."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM stopped the command.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that no ``except Exception`` on the
    way (e.g. one turning a failed image read into a dataset error) swallows it.

    Args:
        signal_number: the signal received.
        message: what was saved and how to continue.
    """

    def __init__(self, signal_number: int, message: str) -> None:
        super().__init__(message)
        self.signal_number = signal_number

    @property
    def signal_name(self) -> str:
        """``"SIGINT"`` or ``"SIGTERM"``."""
        return signal.Signals(self.signal_number).name
