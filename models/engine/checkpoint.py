"""Checkpoints as plain data: written atomically, read with ``torch.load(weights_only=True)``.

A checkpoint is a dict with these keys (no pickled code, so loading cannot run code)::

    format_version   int, CHECKPOINT_FORMAT_VERSION when written
    flowkit_version  str
    model_name       str, the registry name
    model_config     dict, the constructor arguments: the model is rebuilt from it
    model_state      the model's state_dict (parameters and buffers)
    optimizer_state  the optimizer's state_dict, or None
    rng_states       {"torch": ByteTensor, "cuda": [ByteTensor], "numpy": {...}, "python": [...]}
    epoch            int, finished epochs
    step             int, optimizer steps taken
    partial_epoch    dict, the unfinished epoch: {"steps": int, "loss_sum": float,
                     "seconds": float}, all zero at an epoch's end (format 2; read as zero
                     from a format-1 file)
    run_config       dict, the RunConfig as JSON-able data
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from flowkit import __version__

from ..base import MODELS, AnomalyModel, build_model
from ..errors import CheckpointError
from .files import atomic_write

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "CHECKPOINT_KEYS",
    "DEFAULT_ADVICE",
    "NO_PARTIAL_EPOCH",
    "capture_rng_states",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "restore_rng_states",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 2
"""Bumped whenever the layout changes; a reader refuses versions newer than its own."""

CHECKPOINT_KEYS = frozenset({
    "format_version", "flowkit_version", "model_name", "model_config", "model_state",
    "optimizer_state", "rng_states", "epoch", "step", "partial_epoch", "run_config",
})

NO_PARTIAL_EPOCH = {"steps": 0, "loss_sum": 0.0, "seconds": 0.0}
"""The ``partial_epoch`` of a checkpoint written at an epoch's end."""

DEFAULT_ADVICE = "use a checkpoint written by `flowkit train`"
"""How the messages end unless the caller knows better (e.g. the command that rebuilds it)."""

_ADDED_KEYS = {2: {"partial_epoch": NO_PARTIAL_EPOCH}}
"""Keys a format version added, with the value they have in an older checkpoint."""


def capture_rng_states() -> dict[str, Any]:
    """The states of every random source a run uses, as checkpointable data.

    Returns:
        ``torch`` (CPU generator), ``cuda`` (one per device, empty without CUDA), ``numpy``
        (the legacy global generator: bit generator name, key tensor, position, Gaussian
        cache) and ``python`` (``random.getstate()`` as nested lists).
    """
    name, key, position, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "key": torch.from_numpy(key.astype(np.int64)),
                  "position": position, "has_gauss": has_gauss, "gauss": gauss},
        "python": [version, list(internal), gauss_next],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set every random source to the states :func:`capture_rng_states` returned."""
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    numpy_state = states["numpy"]
    np.random.set_state((
        numpy_state["name"], numpy_state["key"].numpy().astype(np.uint32),
        numpy_state["position"], numpy_state["has_gauss"], numpy_state["gauss"],
    ))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_checkpoint(
    path: str | Path,
    model: AnomalyModel,
    optimizer: torch.optim.Optimizer | None,
    epoch: int,
    step: int,
    run_config: dict[str, Any],
    partial_epoch: dict[str, Any] | None = None,
) -> None:
    """Write a checkpoint atomically: a crash leaves the previous file (or none), never half.

    Args:
        path: the destination; its folder must exist.
        model: the model, whose name and config are stored with its state.
        optimizer: its state is stored for resuming; ``None`` for an inference checkpoint.
        epoch: finished epochs.
        step: optimizer steps taken.
        run_config: the run's settings, JSON-able.
        partial_epoch: steps, loss sum and seconds of an unfinished epoch (a checkpoint
            written on a stop signal); ``None``: at an epoch's end.
    """
    checkpoint = {
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "flowkit_version": __version__,
        "model_name": model.name,
        "model_config": dict(model.config),
        "model_state": model.state_dict(),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "rng_states": capture_rng_states(),
        "epoch": epoch,
        "step": step,
        "partial_epoch": dict(partial_epoch or NO_PARTIAL_EPOCH),
        "run_config": run_config,
    }
    atomic_write(path, lambda handle: torch.save(checkpoint, handle))


def load_checkpoint(path: str | Path, expected_model: str | None = None,
                    advice: str = DEFAULT_ADVICE) -> dict[str, Any]:
    """Read and validate a checkpoint (on the CPU).

    Args:
        path: the checkpoint file.
        expected_model: if given, the registry name the checkpoint must be of.
        advice: what the user can do when the file cannot be used (ends each message).

    Returns:
        The checkpoint dict (see the module docstring).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, not a flowkit checkpoint,
            of another model than ``expected_model``, or of a newer format.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; {advice}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # its text advises unsafe loading: never quoted
        raise CheckpointError(
            f"{path} is not a flowkit checkpoint: it holds more than plain data (flowkit never "
            f"writes objects or code), or is corrupt ({type(error).__name__}); do not load it "
            f"otherwise; {advice}"
        ) from error
    except Exception as error:  # a damaged pickle stream raises many types
        raise CheckpointError(
            f"cannot read the checkpoint {path}: the file is truncated or corrupt "
            f"({type(error).__name__}); {advice}"
        ) from error
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a flowkit checkpoint (it has no format_version); {advice}"
        )
    version = checkpoint["format_version"]
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, written by flowkit "
            f"{checkpoint.get('flowkit_version', '?')}; this flowkit {__version__} reads "
            f"formats up to {CHECKPOINT_FORMAT_VERSION}: upgrade flowkit"
        )
    for added_in, defaults in _ADDED_KEYS.items():  # read older formats
        if version < added_in:
            checkpoint = {**defaults, **checkpoint}
    missing = sorted(CHECKPOINT_KEYS - checkpoint.keys())
    if missing:
        raise CheckpointError(
            f"{path} is not a complete flowkit checkpoint: it lacks {missing}; {advice}")
    name = checkpoint["model_name"]
    if expected_model is not None and name != expected_model:
        raise CheckpointError(
            f"{path} is a checkpoint of the model {name!r}, not {expected_model!r}; {advice}"
        )
    return checkpoint


def load_model(
    path: str | Path, device: str | torch.device = "cpu", expected_model: str | None = None,
    advice: str = DEFAULT_ADVICE,
) -> AnomalyModel:
    """Rebuild a model from a checkpoint's name and config and load its state (strictly).

    Args:
        path: the checkpoint file.
        device: where the model goes.
        expected_model: if given, the registry name the checkpoint must be of.
        advice: what the user can do when the file cannot be used.

    Returns:
        The model, in eval mode.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, an unregistered model, or a state that
            does not match the model its config builds.
    """
    checkpoint = load_checkpoint(path, expected_model, advice)
    return model_from_checkpoint(checkpoint, path, advice).to(device).eval()


def model_from_checkpoint(checkpoint: dict[str, Any], path: str | Path,
                          advice: str = DEFAULT_ADVICE) -> AnomalyModel:
    """Build the checkpoint's model from its name and config and load its state strictly.

    Args:
        checkpoint: what :func:`load_checkpoint` returned.
        path: where it was read from, for error messages.
        advice: what the user can do when the state does not fit.

    Returns:
        The model, on the CPU, in training mode.

    Raises:
        CheckpointError: an unregistered model, or a state that does not fit.
    """
    name = checkpoint["model_name"]
    if name not in MODELS:
        raise CheckpointError(
            f"{path} is a checkpoint of the model {name!r}, which is not registered: import "
            f"the module that registers it (for the command line, name it in the environment "
            f"variable FLOWKIT_MODEL_MODULES); registered: {', '.join(sorted(MODELS))}"
        )
    # A config written before an argument existed gets the value that reproduces it.
    model = build_model(name, **{**MODELS[name].config_added, **checkpoint["model_config"]})
    _load_state(model, checkpoint["model_state"], path, advice)
    return model


def _load_state(module: nn.Module, state: dict[str, Any], path: str | Path,
                advice: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with a :class:`CheckpointError`."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = (str(error).splitlines() or [""])[0]
        raise CheckpointError(
            f"the state in {path} does not fit the model its config builds ({first_line}): "
            f"the checkpoint is damaged or from an incompatible flowkit version; {advice}"
        ) from error
