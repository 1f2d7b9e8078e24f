"""flowkit: invertible neural-network primitives for PyTorch.

Every layer is a :class:`Flow` with ``forward(x) -> (y, logdet)`` and an exact
``inverse(y) -> x``; states are tensors or tuples of tensors (multi-scale, finest first).
"""

from . import layers, testing
from ._version import __version__
from .compose import Identity, Inverse, Parallel, Sequential, Split
from .core import Context, Flow, InjectiveFlow, Rebuilt, State, is_recomputing
from .debug import debug_mode
from .distribution import NormalizingFlow, StandardNormal
from .errors import (
    FlowInputError,
    InverseNotAvailable,
    NonFiniteError,
    ReconstructionError,
    ReconstructionWarning,
)

__all__ = [
    "Context",
    "Flow",
    "FlowInputError",
    "Identity",
    "InjectiveFlow",
    "Inverse",
    "InverseNotAvailable",
    "NonFiniteError",
    "NormalizingFlow",
    "Parallel",
    "Rebuilt",
    "ReconstructionError",
    "ReconstructionWarning",
    "Sequential",
    "Split",
    "StandardNormal",
    "State",
    "__version__",
    "debug_mode",
    "is_recomputing",
    "layers",
    "testing",
]
