"""The one exception class of the data package."""

__all__ = ["DatasetError"]


class DatasetError(ValueError):
    """A dataset folder or file that cannot be used: missing, empty, misplaced or unreadable.

    The message names the path, what was expected there and what was found.
    """
