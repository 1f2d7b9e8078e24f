"""The switch between Triton kernels and their plain-PyTorch references.

Every op in ``flowkit.kernels`` has a reference that defines its semantics; the Triton path is
an accelerator, taken only for CUDA tensors, and by default only where a recorded GPU validation
(:mod:`flowkit.kernels.dispatch_table`) says that it is correct and faster for this device
capability, precision and shape class. Two switches force either side:

* the environment variable ``FLOWKIT_KERNELS`` (read on every call): ``0`` always runs the
  references; ``1`` takes Triton for every CUDA tensor the kernel supports, whatever the tables
  say (for validating and benchmarking the kernels); unset or ``auto``: the tables decide;
* :func:`use_kernels` (``True``, ``False`` or ``None`` = auto) for a block of code in the current
  thread, which wins over the variable.

Triton itself is imported only by the launchers: ``import flowkit`` works without it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import threading
from collections.abc import Iterator

import torch

from .choice import Choice
from .dispatch_table import OpFamily, family_rows, validated_row

__all__ = [
    "ENV_VAR",
    "KernelMode",
    "decide_triton",
    "device_capability",
    "dtype_precision",
    "kernel_mode",
    "require_triton",
    "triton_available",
    "use_kernels",
    "use_triton",
]

ENV_VAR = "FLOWKIT_KERNELS"
_ENV_WORDS = {
    "": "auto", "auto": "auto",
    "1": "on", "true": "on", "on": "on", "yes": "on", "force": "on",
    "0": "off", "false": "off", "off": "off", "no": "off",
}
_override = threading.local()


class KernelMode(Choice):
    """Who decides whether an op takes Triton: the tables (``auto``), or a forced side."""

    AUTO = "auto"
    ON = "on"
    OFF = "off"


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported at all (without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except ImportError:  # a finder that refuses it (as the tests' Triton blocker does)
        return False


def require_triton() -> None:
    """Raise ``ImportError`` with the fix unless Triton is installed (the launchers call it)."""
    if not triton_available():
        raise ImportError(
            "the Triton kernels need the `triton` package, which is not installed (pip install "
            f"triton, Linux with a CUDA GPU); or unset {ENV_VAR} / use_kernels(None) so that "
            "the PyTorch references run"
        )


def kernel_mode() -> KernelMode:
    """The innermost :func:`use_kernels`, else ``FLOWKIT_KERNELS``.

    Raises:
        ValueError: if ``FLOWKIT_KERNELS`` holds an unknown word.
    """
    forced = getattr(_override, "mode", None)
    if forced is not None:
        return forced
    word = os.environ.get(ENV_VAR, "").strip().lower()
    if word not in _ENV_WORDS:
        raise ValueError(f"{ENV_VAR}={word!r} is not understood; use 0 (references), "
                         "1 (Triton wherever supported) or auto (the measured tables decide)")
    return KernelMode(_ENV_WORDS[word])


@contextlib.contextmanager
def use_kernels(enabled: bool | None) -> Iterator[None]:
    """Force the Triton kernels on (``True``) or off (``False``), or let the measured tables
    decide (``None``), inside a ``with`` block (thread-local, nestable).

    Example:
        >>> from flowkit.kernels import use_kernels, kernel_mode
        >>> with use_kernels(False):
        ...     kernel_mode()
        <KernelMode.OFF: 'off'>
    """
    if enabled is not None and not isinstance(enabled, bool):
        raise TypeError(f"use_kernels takes True, False or None, got {enabled!r}")
    previous = getattr(_override, "mode", None)
    _override.mode = {True: KernelMode.ON, False: KernelMode.OFF, None: KernelMode.AUTO}[enabled]
    try:
        yield
    finally:
        _override.mode = previous


@functools.cache
def _capability(index: int) -> str:
    major, minor = torch.cuda.get_device_capability(index)
    return f"{major}.{minor}"


def _on_cuda(tensors: tuple[torch.Tensor, ...]) -> bool:
    return bool(tensors) and all(t.is_cuda for t in tensors)


def device_capability(t: torch.Tensor) -> str:
    """``"major.minor"`` of the CUDA device holding ``t``."""
    return _capability(t.device.index if t.device.index is not None else 0)


def dtype_precision(dtype: torch.dtype) -> str:
    """The precision key of an elementwise or stencil op in ``dtype``: its name (``float32``)."""
    return str(dtype).removeprefix("torch.")


def decide_triton(
    mode: KernelMode,
    on_cuda: bool,
    capability: str | None,
    family: OpFamily | str,
    op: str,
    precision: str,
    shape_class: str,
) -> bool:
    """The dispatch decision, from facts alone (so that it is testable without a GPU).

    Args:
        mode: :func:`kernel_mode`.
        on_cuda: whether every tensor of the call is on a CUDA device.
        capability: that device's ``"major.minor"`` (``None`` off CUDA).
        family: the op family whose table holds the rows.
        op: the op's name in the table.
        precision: the arithmetic, e.g. ``"float32"``, ``"tf32"``, ``"bfloat16"``.
        shape_class: the op's shape class of the call.

    Returns:
        ``True`` to run Triton: on CUDA, never when ``mode`` is ``off``, always when ``on``,
        and in ``auto`` only where the family's table has a winning row for this key.

    Raises:
        ImportError: if Triton is forced on for CUDA tensors but not installed.
        DispatchTableError: if the family's table file is malformed.
    """
    if not on_cuda or mode is KernelMode.OFF:
        return False
    if mode is KernelMode.ON:
        require_triton()
        return True
    if not triton_available():
        return False
    rows = family_rows(OpFamily(family))
    return validated_row(rows, op, capability or "", precision, shape_class) is not None


def use_triton(
    family: OpFamily | str, op: str, precision: str, shape_class: str, *tensors: torch.Tensor
) -> bool:
    """Whether a call of ``op`` on ``tensors`` takes its Triton path (see :func:`decide_triton`).

    Example:
        >>> import torch
        >>> use_triton("pyramid", "pyr_down", "float32", "n<=2^14", torch.zeros(2))
        False
    """
    on_cuda = _on_cuda(tensors)
    mode = kernel_mode()
    capability = device_capability(tensors[0]) if on_cuda and mode is KernelMode.AUTO else None
    return decide_triton(mode, on_cuda, capability, family, op, precision, shape_class)
