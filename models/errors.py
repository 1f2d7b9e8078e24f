"""The expected failures of the application: the user can fix each, and its message says how.

The command line prints any :class:`AppError` (and a
:class:`~flowkit.models.data.DatasetError`) as one ``error: ...`` line with exit code 2;
anything else is a bug and exits with 1.
"""

__all__ = ["AppError", "CheckpointError", "ConfigError", "NonFiniteLossError", "RunFolderError"]


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
