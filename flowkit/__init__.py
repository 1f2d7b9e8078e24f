"""flowkit: invertible neural-network primitives for PyTorch.

Every layer is a :class:`Flow` with ``forward(x) -> (y, logdet)`` and an exact
``inverse(y) -> x``; states are tensors or tuples of tensors (multi-scale, finest first).
"""

import importlib
from typing import Any

from ._version import __version__

# The public names by the module that defines them, imported on first use (PEP 562): the
# `flowkit` command's help starts without PyTorch. A new public name goes here and in __all__.
_EXPORTS = {
    "bases": ("ConditionalDiagonalGaussian", "DiagonalGaussian"),
    "compose": ("Identity", "Inverse", "Parallel", "Sequential", "Split"),
    "core": ("Context", "Flow", "InjectiveFlow", "Rebuilt", "State", "is_recomputing"),
    "debug": ("debug_mode",),
    "dequantization": ("VariationalDequantization", "bits_per_dim", "uniform_dequantize"),
    "distribution": ("NormalizingFlow", "StandardNormal"),
    "multiscale": ("MultiScaleFlow", "glow"),
    "errors": ("FlowInputError", "InverseNotAvailable", "NonFiniteError",
               "ReconstructionError", "ReconstructionWarning"),
}
_SUBPACKAGES = ("layers", "testing")
_SOURCE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "ConditionalDiagonalGaussian",
    "Context",
    "DiagonalGaussian",
    "Flow",
    "FlowInputError",
    "Identity",
    "InjectiveFlow",
    "Inverse",
    "InverseNotAvailable",
    "MultiScaleFlow",
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
    "VariationalDequantization",
    "__version__",
    "bits_per_dim",
    "debug_mode",
    "glow",
    "is_recomputing",
    "layers",
    "testing",
    "uniform_dequantize",
]


def __getattr__(name: str) -> Any:
    """Import a public name or sub-package on first use."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    if name in _SOURCE:
        return getattr(importlib.import_module(f".{_SOURCE[name]}", __name__), name)
    raise AttributeError(f"module 'flowkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
