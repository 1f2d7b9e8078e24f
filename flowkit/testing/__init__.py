"""Property checks for invertible layers: exact inverse and log-determinant, for users' own too.

:func:`check_flow` runs the checks and raises an ``AssertionError`` naming the failing property;
:mod:`flowkit.testing.strategies` (needs ``hypothesis``) generates shapes, dtypes and states.
"""

from .checks import FlowReport, check_flow, default_tolerance, perturb_parameters_

__all__ = ["FlowReport", "check_flow", "default_tolerance", "perturb_parameters_"]
