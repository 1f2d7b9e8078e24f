"""Checks of user input shared by all layers, raising errors that name the problem and the fix.

The checks read only shapes (host metadata), never tensor values, so they cost no device sync.
"""

from __future__ import annotations

from torch import Tensor

from .core import State
from .errors import FlowInputError

__all__ = ["check_channels", "check_divisible", "check_single", "check_tuple"]


def _name(layer: object) -> str:
    return type(layer).__name__


def check_single(layer: object, x: State, min_dim: int = 2) -> Tensor:
    """Require a single Tensor of at least ``min_dim`` dimensions (batch, channels, ...)."""
    if not isinstance(x, Tensor):
        raise FlowInputError(
            f"{_name(layer)} takes a single Tensor, got a {type(x).__name__} of "
            f"{len(x) if isinstance(x, tuple) else '?'} elements; wrap it in "
            "flowkit.Parallel(...) to apply it to each scale of a tuple state"
        )
    if x.dim() < min_dim:
        raise FlowInputError(
            f"{_name(layer)} expects a tensor of at least {min_dim} dimensions "
            f"(batch, channels, ...), got shape {tuple(x.shape)}"
        )
    return x


def check_channels(layer: object, x: State, channels: int) -> Tensor:
    """Require a single Tensor ``[batch, channels, ...]`` with the layer's channel count."""
    x = check_single(layer, x)
    if x.shape[1] != channels:
        raise FlowInputError(
            f"{_name(layer)} was built for {channels} channels but got a tensor of shape "
            f"{tuple(x.shape)} ({x.shape[1]} channels in dim 1); build it with "
            f"channels={x.shape[1]} or check the layer order"
        )
    return x


def check_divisible(layer: object, x: Tensor, factor: int) -> None:
    """Require the spatial size (dims 2 and 3) of ``x`` to be divisible by ``factor``."""
    if x.dim() != 4:
        raise FlowInputError(
            f"{_name(layer)} expects a 4-D tensor (batch, channels, height, width), "
            f"got shape {tuple(x.shape)}"
        )
    height, width = x.shape[-2:]
    if height % factor or width % factor:
        fix = [f"{n} -> {n - n % factor} or {n - n % factor + factor}" for n in (height, width)
               if n % factor]
        raise FlowInputError(
            f"{_name(layer)} cannot split a {height}x{width} map into {factor}x{factor} blocks; "
            f"crop or pad the size to a multiple of {factor} ({'; '.join(fix)})"
        )


def check_tuple(layer: object, y: State, length: int) -> tuple[Tensor, ...]:
    """Require a tuple state of exactly ``length`` tensors."""
    if isinstance(y, Tensor) or len(y) != length:
        got = "a single Tensor" if isinstance(y, Tensor) else f"a tuple of {len(y)}"
        raise FlowInputError(
            f"{_name(layer)} expects a tuple of {length} tensors (one per scale), got {got}"
        )
    return tuple(y)
