"""SIGINT and SIGTERM during a command: training stops after the current step, with a
checkpoint to resume from; anywhere else the command stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ..errors import Interrupted

__all__ = ["STOP_SIGNALS", "StopSignals"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what schedulers and ``kill`` send: both stop training after the current step."""


class StopSignals:
    """SIGINT and SIGTERM handlers for the duration of a command (a context manager).

    Inside :meth:`deferred` (the training steps) the first signal is only recorded in
    :attr:`received`, and the training loop stops after the current step, saving a
    checkpoint. Anywhere else, and for a second signal, the handler raises
    :class:`~flowkit.models.errors.Interrupted` at once: every file is written atomically, so
    nothing is left half-written. The previous handlers are restored on exit; outside the main
    thread (where Python allows no handlers) signals keep theirs. The handler prints nothing:
    a print from a signal handler can interrupt a print in progress.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._deferring = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            for number in STOP_SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if self._deferring and self.received is None:
            self.received = number
            return
        raise Interrupted(number, f"stopped by {signal.Signals(number).name}")

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """While inside, a first signal is recorded instead of raised."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
