"""Fixtures of the application tests: the tiny registered model and small run settings."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from flowkit.models.engine.config import DataSettings, RunConfig

from .threads import one_thread
from .tiny_model import TINY, TinyAutoencoder

IMAGE_SIZE = 32


@pytest.fixture
def tiny_config() -> RunConfig:
    """Two epochs of the tiny model on synthetic bricks at 32 px (12 steps per epoch)."""
    model = TinyAutoencoder()
    return RunConfig(
        model=TINY,
        model_config=dict(model.config),
        data=DataSettings("synthetic", None, "brick", IMAGE_SIZE),
        epochs=2,
        batch_size=4,
        seed=0,
        optimizer=dict(model.optimizer_settings()),
    )


@pytest.fixture
def single_thread() -> Iterator[None]:
    """One intra-op thread for the whole test (see :func:`one_thread`)."""
    with one_thread():
        yield
