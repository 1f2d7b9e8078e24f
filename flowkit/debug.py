"""Opt-in debug mode: NaN/Inf checks after every block and the memory-saving engine's drift report.

Off by default because each check reads tensor values on the host (a device sync per block).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import Tensor

from .core import State, state_tensors
from .errors import NonFiniteError

__all__ = ["check_finite", "debug_mode", "is_debug"]

_local = threading.local()


def is_debug() -> bool:
    """Whether :func:`debug_mode` is active in this thread."""
    return getattr(_local, "enabled", False)


@contextlib.contextmanager
def debug_mode(enabled: bool = True) -> Iterator[None]:
    """Check states for NaN/Inf after every block of a :class:`flowkit.Sequential`.

    Inside the block, memory-saving Sequentials also record how far each rebuilt input drifted
    from the true one (see :attr:`flowkit.Sequential.drift`).

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.Sequential(flowkit.layers.ActNorm(2))
        >>> with flowkit.debug_mode():
        ...     _ = flow(torch.full((1, 2, 3, 3), float("nan")))
        Traceback (most recent call last):
        ...
        flowkit.errors.NonFiniteError: NaN/Inf in the output of block 0 (ActNorm) ...
    """
    previous = is_debug()
    _local.enabled = enabled
    try:
        yield
    finally:
        _local.enabled = previous


def check_finite(state: State, logdet: Tensor, where: str) -> None:
    """Raise :class:`NonFiniteError` naming ``where`` if the state or logdet holds NaN/Inf."""
    for i, t in enumerate((*state_tensors(state), logdet)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            what = "log-determinant" if i == len(state_tensors(state)) else f"state tensor {i}"
            raise NonFiniteError(
                f"NaN/Inf in the output of {where} ({what}); check the input data, lower the "
                "learning rate or the coupling clamp"
            )
