"""Named exceptions of flowkit, so callers can catch what went wrong precisely."""

__all__ = ["FlowInputError", "InverseNotAvailable", "NonFiniteError"]


class FlowInputError(ValueError):
    """A state that a layer cannot take: wrong channel count, size, rank or tuple length."""


class InverseNotAvailable(TypeError):
    """A module without an inverse was used where an invertible Flow is required."""


class NonFiniteError(FloatingPointError):
    """NaN or Inf appeared in a state or log-determinant (raised by the opt-in debug mode)."""
