"""Running out of memory, turned into an error whose message names the flags that use less."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..errors import OutOfMemoryError

__all__ = ["inference_advice", "is_out_of_memory", "memory_advice"]

_OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory")  # CUDA, CPU allocator


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a GPU's or the host's allocator running out of memory."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(error, RuntimeError)
        and any(text in str(error).lower() for text in _OUT_OF_MEMORY_MESSAGES))


@contextlib.contextmanager
def memory_advice(doing: str, advice: str) -> Iterator[None]:
    """Turn running out of memory while ``doing`` into an :class:`OutOfMemoryError` whose
    one-line message gives ``advice``."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not is_out_of_memory(error):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OutOfMemoryError(f"out of memory while {doing} ({reason}); {advice}") from error


def inference_advice(batch_size: int, device: torch.device) -> str:
    """What to do when evaluating or predicting runs out of memory."""
    cpu = " or --device cpu" if device.type == "cuda" else ""
    return f"lower --batch-size (now {batch_size}){cpu}"
