"""The switch between Triton kernels and their plain-PyTorch references.

Every op in ``flowkit.kernels`` has a reference that defines its semantics; the Triton path is an
accelerator taken only for CUDA tensors, while kernels are enabled. They are enabled unless the
environment variable ``FLOWKIT_KERNELS`` is ``0`` (read on every call, so tests can set it), and
:func:`use_kernels` switches them for a block of code in the current thread.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
from collections.abc import Iterator

import torch

__all__ = ["ENV_VAR", "kernels_enabled", "triton_available", "use_kernels", "use_triton"]

ENV_VAR = "FLOWKIT_KERNELS"
_FALSE_WORDS = frozenset({"0", "false", "off", "no"})
_override = threading.local()


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported at all."""
    return importlib.util.find_spec("triton") is not None


def kernels_enabled() -> bool:
    """Whether Triton kernels may be used: the innermost :func:`use_kernels`, else the env var."""
    forced = getattr(_override, "enabled", None)
    if forced is not None:
        return forced
    return os.environ.get(ENV_VAR, "1").strip().lower() not in _FALSE_WORDS


@contextlib.contextmanager
def use_kernels(enabled: bool) -> Iterator[None]:
    """Enable or disable the Triton kernels inside a ``with`` block (thread-local, nestable).

    Example:
        >>> from flowkit.kernels import use_kernels, kernels_enabled
        >>> with use_kernels(False):
        ...     kernels_enabled()
        False
    """
    previous = getattr(_override, "enabled", None)
    _override.enabled = bool(enabled)
    try:
        yield
    finally:
        _override.enabled = previous


def use_triton(*tensors: torch.Tensor) -> bool:
    """Whether an op on ``tensors`` should take its Triton path: kernels enabled, all on CUDA."""
    return (
        kernels_enabled()
        and triton_available()
        and all(t.is_cuda for t in tensors)
    )
