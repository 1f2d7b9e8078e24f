"""Processes of a gloo group for tests that spawn them with ``torch.multiprocessing.spawn``.

Each process joins through flowkit's own :func:`distributed_session`, set up as ``torchrun``
would set it up, so the tests exercise the same joining and teardown as ``flowkit train``.
Wrap modules in DDP with the yielded :meth:`Distributed.wrap`: the session detaches those from
the process group as it ends (a DDP module made otherwise that still holds the group frees it
later, and can deadlock doing so). :func:`spawn` fails a test whose processes hang instead of
hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.multiprocessing as mp

from flowkit.models.engine.distributed import Distributed, distributed_session

__all__ = ["free_port", "gloo_process", "spawn"]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_process(rank: int, world_size: int, port: int) -> Iterator[Distributed]:
    """Join a ``world_size``-process gloo group on ``port`` as process ``rank``; leave on exit."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with distributed_session(torch.device("cpu")) as (distributed, _):
        yield distributed


def spawn(worker: Callable[..., None], args: tuple, processes: int = 2,
          timeout: float = 120.0) -> None:
    """``torch.multiprocessing.spawn(worker, args, processes)``, killed and failed after
    ``timeout`` seconds."""
    context = mp.spawn(worker, args=args, nprocs=processes, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {processes} processes of {worker.__name__} still ran after "
                        f"{timeout:.0f} s (hung, e.g. freeing the process group)")
