"""Named exceptions of flowkit, so callers can catch what went wrong precisely."""

__all__ = [
    "FlowInputError",
    "InverseNotAvailable",
    "NonFiniteError",
    "ReconstructionError",
    "ReconstructionWarning",
]


class FlowInputError(ValueError):
    """A state that a layer cannot take: wrong channel count, size, rank or tuple length."""


class InverseNotAvailable(TypeError):
    """A module without an inverse was used where an invertible Flow is required."""


class NonFiniteError(FloatingPointError):
    """NaN or Inf appeared in a state or log-determinant (raised by the opt-in debug mode)."""


class ReconstructionError(RuntimeError):
    """A memory-saving backward rebuilt inputs too far from the true ones (the drift guard)."""


class ReconstructionWarning(RuntimeWarning):
    """The drift guard's warning, with ``Sequential(..., on_drift="warn")``."""
