"""``Choice``: the ``str`` Enum of every mode in flowkit, whose unknown values name the choices.

Lives in ``flowkit.kernels``, the bottom of the dependency chain, so the kernels, the layers and
the models share the one mechanism.
"""

from __future__ import annotations

import re
from enum import Enum

__all__ = ["Choice"]


class Choice(str, Enum):
    """A ``str`` Enum whose constructor, given an unknown value, raises a ``ValueError`` naming
    the kind of choice (from the class name) and the valid values.

    Example:
        >>> class Color(Choice):
        ...     RED = "red"
        >>> Color("blue")
        Traceback (most recent call last):
        ...
        ValueError: unknown color 'blue'; choose one of 'red'
    """

    @classmethod
    def _missing_(cls, value: object) -> None:
        kind = re.sub(r"(?<!^)(?=[A-Z])", " ", cls.__name__).lower()
        choices = ", ".join(repr(member.value) for member in cls)
        raise ValueError(f"unknown {kind} {value!r}; choose one of {choices}")
