"""Where training stands, and continuing it from ``last.pt``: the optimizer, the epoch and
step counters, the position in an unfinished epoch, and the random states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..base import AnomalyModel
from ..errors import CheckpointError, ConfigError
from .checkpoint import load_checkpoint, model_from_checkpoint
from .config import RunConfig
from .files import read_json
from .run_folder import RunFolder

__all__ = ["ResumePoint", "TrainingState", "make_optimizer", "resume_point"]


@dataclass
class TrainingState:
    """Where training stands: finished epochs, optimizer steps, the per-epoch records, and the
    steps, loss sum and seconds of the epoch under way."""

    epoch: int
    step: int
    history: list[dict[str, Any]]
    epoch_steps: int = 0
    epoch_loss: float = 0.0
    epoch_seconds: float = 0.0

    def partial_epoch(self) -> dict[str, Any]:
        """The unfinished epoch, as a checkpoint stores it."""
        return {"steps": self.epoch_steps, "loss_sum": self.epoch_loss,
                "seconds": self.epoch_seconds}

    def finish_epoch(self) -> dict[str, Any]:
        """Close the epoch under way; returns its history record."""
        self.epoch += 1
        record = {"epoch": self.epoch, "loss": self.epoch_loss / self.epoch_steps,
                  "steps": self.epoch_steps, "seconds": round(self.epoch_seconds, 3)}
        self.history.append(record)
        self.epoch_steps, self.epoch_loss, self.epoch_seconds = 0, 0.0, 0.0
        return record



def make_optimizer(model: AnomalyModel, settings: dict[str, Any]) -> torch.optim.Adam:
    """Adam over the model's trainable parameters (``clip_grad_norm`` is not Adam's)."""
    adam_settings = {k: v for k, v in settings.items() if k != "clip_grad_norm"}
    if "betas" in adam_settings:
        adam_settings["betas"] = tuple(adam_settings["betas"])
    return torch.optim.Adam(model.trainable_parameters(), **adam_settings)


@dataclass
class ResumePoint:
    """What ``last.pt`` holds to continue a run: read and checked before anything is written.

    Attributes:
        model: the model, on the device.
        optimizer: its optimizer with the saved state (``None`` for a model without training).
        state: epochs, steps and the position in the unfinished epoch.
        rng_states: the random states, restored when training starts.
    """

    model: AnomalyModel
    optimizer: torch.optim.Adam | None
    state: TrainingState
    rng_states: dict[str, Any]


def resume_point(config: RunConfig, run: RunFolder, device: torch.device) -> ResumePoint:
    """Read ``last.pt`` of ``run`` to continue it with ``config``; nothing is written.

    Raises:
        CheckpointError: ``last.pt`` is unreadable, of another model, or its state does not
            fit the model or the optimizer.
        ConfigError: the run has trained more epochs than ``config.epochs``.
    """
    advice = "the run cannot continue from it: start it anew with --overwrite instead of --resume"
    checkpoint = load_checkpoint(run.last_checkpoint, config.model, advice)
    if checkpoint["epoch"] > config.epochs:
        raise ConfigError(
            f"the run in {run.root} has already trained {checkpoint['epoch']} epochs; "
            f"pass --epochs {checkpoint['epoch']} or more to resume it"
        )
    model = model_from_checkpoint(checkpoint, run.last_checkpoint, advice).to(device)
    optimizer = make_optimizer(model, config.optimizer) if model.needs_training else None
    if optimizer is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer_state"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"the optimizer state in {run.last_checkpoint} does not fit the model ({error}); "
                "the checkpoint is damaged: start again with --overwrite"
            ) from error
    history = read_json(run.history)[: checkpoint["epoch"]] if run.history.is_file() else []
    partial = checkpoint["partial_epoch"]
    state = TrainingState(checkpoint["epoch"], checkpoint["step"], history, partial["steps"],
                   partial["loss_sum"], partial["seconds"])
    return ResumePoint(model, optimizer, state, checkpoint["rng_states"])
