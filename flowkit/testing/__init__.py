"""Property checks for invertible layers: exact inverse and log-determinant, for users' own too.

:func:`check_flow` runs the checks and raises an ``AssertionError`` naming the failing property;
:mod:`flowkit.testing.strategies` (needs ``hypothesis``) generates shapes, dtypes and states.
"""

from .checks import (
    FlowReport,
    check_flow,
    default_logdet_tolerance,
    default_tolerance,
    perturb_parameters_,
)
from .memory_saving import MemorySavingReport, check_memory_saving, default_gradient_tolerance

__all__ = [
    "FlowReport",
    "MemorySavingReport",
    "check_flow",
    "check_memory_saving",
    "default_gradient_tolerance",
    "default_logdet_tolerance",
    "default_tolerance",
    "perturb_parameters_",
]
