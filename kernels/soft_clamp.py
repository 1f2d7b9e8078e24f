"""The soft clamp of coupling log-scales, defined once for layers, kernels and their references.

An affine coupling multiplies by ``exp(s)``; an unbounded ``s`` makes training unstable, so ``s``
is squashed smoothly into ``(-clamp, clamp)`` while keeping slope 1 at the origin:

.. math::

    \\operatorname{atan}: \\quad s \\mapsto c \\cdot \\tfrac{2}{\\pi} \\arctan(s / c), \\qquad
    \\operatorname{tanh}: \\quad s \\mapsto c \\cdot \\tanh(s / c).

(The atan form has slope ``2/pi`` at the origin, as in PyramidFlow and CS-Flow.)
"""

from __future__ import annotations

import math

import torch

from .choice import Choice

__all__ = ["ClampFn", "SOFT_CLAMP_SCALE", "check_clamp", "soft_clamp"]

SOFT_CLAMP_SCALE = 2 / math.pi
"""Maps ``atan``'s range ``(-pi/2, pi/2)`` onto ``(-1, 1)``."""


class ClampFn(Choice):
    """The squashing function of :func:`soft_clamp`."""

    ATAN = "atan"
    TANH = "tanh"


def soft_clamp(
    s: torch.Tensor, clamp: float, fn: ClampFn | str = ClampFn.ATAN, scale: float = SOFT_CLAMP_SCALE
) -> torch.Tensor:
    """Squash log-scales smoothly into ``(-clamp, clamp)``.

    ``atan``: ``clamp * 2/pi * atan(s / clamp)``; ``tanh``: ``clamp * tanh(s / clamp)``.

    Args:
        s: raw log-scales, any shape.
        clamp: the bound, a positive number.
        fn: which squashing function, a :class:`ClampFn` or its string value.
        scale: ``atan``'s factor, :data:`SOFT_CLAMP_SCALE` (``2/pi``); another value only to
            reproduce code that rounds it (the bound becomes ``clamp * scale * pi/2``).

    Returns:
        A tensor of the shape and dtype of ``s`` with values in ``(-clamp, clamp)``.

    Raises:
        TypeError: if ``clamp`` is not a Python number.
        ValueError: if ``clamp`` is not positive or ``fn`` is not a :class:`ClampFn` value.

    Example:
        >>> import torch
        >>> soft_clamp(torch.tensor([0.0, 1e6]), 2.0, "atan")
        tensor([0.0000, 2.0000])
    """
    fn = check_clamp(clamp, fn)
    if fn is ClampFn.ATAN:
        return clamp * scale * torch.atan(s / clamp)
    return clamp * torch.tanh(s / clamp)


def check_clamp(clamp: float, fn: ClampFn | str) -> ClampFn:
    """Validate a clamp bound and function name; return the function as a :class:`ClampFn`.

    Raises:
        TypeError: if ``clamp`` is not a Python number.
        ValueError: if ``clamp`` is not a positive finite number or ``fn`` is unknown.
    """
    if isinstance(clamp, bool) or not isinstance(clamp, (int, float)):
        raise TypeError(f"clamp must be a Python float, got {type(clamp).__name__}; pass e.g. 2.0")
    if not (math.isfinite(clamp) and clamp > 0):
        raise ValueError(f"clamp must be a positive finite number, got {clamp!r}; pass e.g. 2.0")
    return ClampFn(fn)
