"""Triton kernels for flowkit's hot spots, each with a plain-PyTorch reference it falls back to.

Import the ops from their modules; this package only exposes the switch between kernels and
references (:func:`use_kernels`, the ``FLOWKIT_KERNELS`` environment variable) and the measured
dispatch tables. Importing it does not import Triton.
"""

from .dispatch import (
    ENV_VAR,
    KernelMode,
    decide_triton,
    kernel_mode,
    triton_available,
    use_kernels,
    use_triton,
)
from .dispatch_table import DispatchTableError, ValidationRow

__all__ = [
    "ENV_VAR",
    "DispatchTableError",
    "KernelMode",
    "ValidationRow",
    "decide_triton",
    "kernel_mode",
    "triton_available",
    "use_kernels",
    "use_triton",
]
