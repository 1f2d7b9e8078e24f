"""One intra-op thread for the application's tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["one_thread"]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one intra-op thread, restoring the count after (also on errors).

    The tiny model's tensors are too small to share, and on a busy 2-core machine a second
    spinning thread makes each step ~100x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
