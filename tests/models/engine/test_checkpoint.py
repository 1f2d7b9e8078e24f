"""Checkpoints: atomic writes, data-only loading, every error case, and random-state capture."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit.models.engine import checkpoint as checkpoint_module
from flowkit.models.engine.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    NO_PARTIAL_EPOCH,
    capture_rng_states,
    load_checkpoint,
    load_model,
    restore_rng_states,
    save_checkpoint,
)
from flowkit.models.engine.files import atomic_write
from flowkit.models.errors import CheckpointError

from ..tiny_model import TINY, TinyAutoencoder

RUN_CONFIG = {"note": "any JSON-able data"}


def _model() -> TinyAutoencoder:
    model = TinyAutoencoder(hidden=3)
    with torch.no_grad():
        model.offset.fill_(0.25)  # a buffer that must travel too
    return model


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    """A checkpoint of the tiny model with an optimizer that has taken a step."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.loss(torch.rand(2, 3, 8, 8)).backward()
    optimizer.step()
    path = tmp_path / "last.pt"
    save_checkpoint(path, model, optimizer, epoch=3, step=30, run_config=RUN_CONFIG)
    return path


def _resave(source: Path, target: Path, **changes: object) -> Path:
    """A copy of a checkpoint with some entries changed."""
    checkpoint = torch.load(source, weights_only=True)
    checkpoint.update(changes)
    torch.save(checkpoint, target)
    return target


def test_round_trip_rebuilds_the_model_strictly(saved: Path) -> None:
    checkpoint = load_checkpoint(saved, expected_model=TINY)
    assert checkpoint["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert (checkpoint["epoch"], checkpoint["step"]) == (3, 30)
    assert checkpoint["run_config"] == RUN_CONFIG
    assert checkpoint["optimizer_state"]["state"]  # Adam's moments
    model = load_model(saved)
    assert not model.training
    assert model.config == {"hidden": 3, "noise": 0.1, "levels": 1}
    torch.testing.assert_close(model.state_dict(), checkpoint["model_state"], rtol=0, atol=0)
    assert float(model.offset) == 0.25


def test_rng_states_round_trip() -> None:
    states = capture_rng_states()
    first = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_states(states)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    np.testing.assert_array_equal(again[1], first[1])
    assert again[2] == first[2]


def test_a_failed_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_then_fail(obj: object, handle: object) -> None:
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last.pt", _model(), None, 0, 0, RUN_CONFIG)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "file.json"
    path.write_text("previous")

    def fail(handle: object) -> None:
        handle.write(b"new, but only ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["file.json"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_file(saved: Path, tmp_path: Path, keep: float) -> None:
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)


def test_garbage_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.pt"):
        load_checkpoint(garbage)


def test_not_a_flowkit_checkpoint(tmp_path: Path) -> None:
    plain = tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a flowkit checkpoint .*no format_version"):
        load_checkpoint(plain)


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.pt"
    torch.save({"format_version": 1, "model": TinyAutoencoder()}, pickled)
    with pytest.raises(CheckpointError, match="more than plain data") as raised:
        load_checkpoint(pickled)
    assert isinstance(raised.value.__cause__, pickle.UnpicklingError)


def test_another_model(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="of the model 'tiny', not 'pyramidflow'"):
        load_model(saved, expected_model="pyramidflow")


def test_newer_format(saved: Path, tmp_path: Path) -> None:
    newer = _resave(saved, tmp_path / "newer.pt", format_version=CHECKPOINT_FORMAT_VERSION + 1,
                    flowkit_version="99.0")
    with pytest.raises(CheckpointError, match="written by flowkit 99.0.*upgrade flowkit"):
        load_checkpoint(newer)


def test_format_1_reads_as_at_an_epochs_end(saved: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    del checkpoint["partial_epoch"]
    torch.save({**checkpoint, "format_version": 1}, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt")["partial_epoch"] == NO_PARTIAL_EPOCH


def test_incomplete_checkpoint(saved: Path, tmp_path: Path) -> None:
    checkpoint = torch.load(saved, weights_only=True)
    del checkpoint["rng_states"]
    torch.save(checkpoint, tmp_path / "incomplete.pt")
    with pytest.raises(CheckpointError, match=r"lacks \['rng_states'\]"):
        load_checkpoint(tmp_path / "incomplete.pt")


def test_state_that_does_not_fit_the_config(saved: Path, tmp_path: Path) -> None:
    other = _resave(saved, tmp_path / "other.pt", model_config={"hidden": 5})
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_model(other)


def test_unregistered_model(saved: Path, tmp_path: Path) -> None:
    unknown = _resave(saved, tmp_path / "unknown.pt", model_name="nobody")
    with pytest.raises(CheckpointError, match="'nobody', which is not registered"):
        load_model(unknown)
