"""The training loop: seeded, checkpointed after every epoch, resumable to the same weights.

The reported model is always the final one (after the last epoch and ``fit_normal``): no
checkpoint is ever chosen by looking at the test set.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .base import AnomalyModel, build_model
from .checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from .data import Item, Split, TextureAugment
from .errors import CheckpointError, ConfigError, NonFiniteLossError
from .run import RunConfig, RunFolder, read_json, write_json

__all__ = ["TrainOptions", "epoch_generator", "seed_everything", "train"]

LOSS_FORMAT = ".5g"
"""How losses are printed in the progress bar and the log."""


@dataclass(frozen=True)
class TrainOptions:
    """How a run is executed; none of it changes the result on a given device.

    Attributes:
        device: where the model runs.
        workers: data-loading worker processes (0: in the main process).
        progress: show tqdm progress bars.
        quiet: print nothing but errors (the log file is still written).
    """

    device: torch.device
    workers: int = 0
    progress: bool = True
    quiet: bool = False


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's data order: a function of the seed and the epoch only, so
    a resumed run draws the same batches as an uninterrupted one."""
    state = np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class _Logger:
    """Writes a line to ``train.log`` and, unless quiet, to stderr (above the progress bars)."""

    def __init__(self, run: RunFolder, quiet: bool) -> None:
        self.run, self.quiet = run, quiet

    def __call__(self, line: str) -> None:
        self.run.append_log(line)
        if not self.quiet:
            tqdm.write(line, file=sys.stderr)


@dataclass
class _State:
    """Where training stands: finished epochs, optimizer steps and the per-epoch records."""

    epoch: int
    step: int
    history: list[dict[str, Any]]


def _images(loader: DataLoader[Item], device: torch.device) -> Iterator[Tensor]:
    """The image batches of ``loader`` on ``device``."""
    for batch in loader:
        yield batch.image.to(device, non_blocking=True)


def _optimizer(model: AnomalyModel, settings: dict[str, Any]) -> torch.optim.Adam:
    """Adam over the model's trainable parameters (``clip_grad_norm`` is not Adam's)."""
    adam_settings = {k: v for k, v in settings.items() if k != "clip_grad_norm"}
    if "betas" in adam_settings:
        adam_settings["betas"] = tuple(adam_settings["betas"])
    return torch.optim.Adam(model.trainable_parameters(), **adam_settings)


_OptimizerFactory = Callable[[AnomalyModel], torch.optim.Adam | None]


def _restore(config: RunConfig, run: RunFolder, optimizer_of: _OptimizerFactory
             ) -> tuple[AnomalyModel, torch.optim.Adam | None, _State]:
    """Model, optimizer and state from ``last.pt``, with every random source restored.

    ``optimizer_of`` moves the model to its device and builds its optimizer (``None`` for
    a model that is not trained by gradient steps).
    """
    checkpoint = load_checkpoint(run.last_checkpoint, config.model)
    if checkpoint["epoch"] > config.epochs:
        raise ConfigError(
            f"the run in {run.root} has already trained {checkpoint['epoch']} epochs; "
            f"pass --epochs {checkpoint['epoch']} or more to resume it"
        )
    model = model_from_checkpoint(checkpoint, run.last_checkpoint)
    optimizer = optimizer_of(model)
    if optimizer is not None:
        try:
            optimizer.load_state_dict(checkpoint["optimizer_state"])
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointError(
                f"the optimizer state in {run.last_checkpoint} does not fit the model ({error}); "
                "the checkpoint is damaged: start again with --overwrite"
            ) from error
    restore_rng_states(checkpoint["rng_states"])
    history = read_json(run.history)[: checkpoint["epoch"]] if run.history.is_file() else []
    return model, optimizer, _State(checkpoint["epoch"], checkpoint["step"], history)


def _check_finite(value: float, what: str, state: _State, run: RunFolder) -> None:
    """Raise :class:`NonFiniteLossError` naming the step unless ``value`` is finite."""
    if math.isfinite(value):
        return
    last = (
        f"the last good checkpoint is {run.last_checkpoint} (epoch {state.epoch})"
        if run.last_checkpoint.is_file() else "no checkpoint was written yet"
    )
    raise NonFiniteLossError(
        f"the {what} became {value} at step {state.step + 1} (epoch {state.epoch + 1}); "
        f"{last}: lower --lr or --clip-grad-norm, check the data, then --resume or --overwrite"
    )


def _train_epoch(
    model: AnomalyModel,
    optimizer: torch.optim.Optimizer,
    clip: float | None,
    loader: DataLoader[Item],
    state: _State,
    run: RunFolder,
    options: TrainOptions,
    description: str,
) -> float:
    """One pass over the training images; returns the mean loss and advances ``state.step``."""
    model.train()
    parameters = model.trainable_parameters()
    total, steps = 0.0, 0
    bar = tqdm(_images(loader, options.device), total=len(loader), desc=description,
               unit="step", leave=False, disable=not options.progress, file=sys.stderr)
    for images in bar:
        loss = model.loss(images)
        value = float(loss.detach())
        _check_finite(value, "loss", state, run)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip))
            _check_finite(norm, "gradient norm", state, run)
        optimizer.step()
        state.step += 1
        total, steps = total + value, steps + 1
        bar.set_postfix(loss=format(value, LOSS_FORMAT), refresh=False)
    return total / steps


def _training_images(config: RunConfig) -> tuple[Dataset[Item], Dataset[Item]]:
    """The training images with augmentation (textures only) and without (for fit_normal)."""
    plain = config.data.dataset(Split.TRAIN.value)
    augmented = config.data.dataset(Split.TRAIN.value, TextureAugment()) if config.data.augment \
        else plain
    if len(plain) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(plain)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    return augmented, plain


def train(config: RunConfig, run: RunFolder, options: TrainOptions,
          resume: bool = False) -> AnomalyModel:
    """Train a model, fit it on the normal images and write ``checkpoints/final.pt``.

    After every epoch ``history.json`` and then ``checkpoints/last.pt`` are written
    atomically; with ``resume`` training continues from ``last.pt`` (model, optimizer, random
    states, epoch and step), so the result equals an uninterrupted run's on the CPU.

    Args:
        config: the run's settings; written to ``config.json``.
        run: the prepared run folder.
        options: device, workers, progress bars.
        resume: continue from ``checkpoints/last.pt`` if it exists.

    Returns:
        The final model, in eval mode, on ``options.device``.

    Raises:
        NonFiniteLossError: a NaN or infinite loss; ``last.pt`` keeps the last good epoch.
        CheckpointError: ``last.pt`` cannot be resumed from.
        ConfigError: a batch larger than the training set, or fewer epochs than already run.
        DatasetError: missing or unreadable images.
    """
    log = _Logger(run, options.quiet)
    write_json(run.config, config.to_json())
    augmented, plain = _training_images(config)
    clip = config.optimizer.get("clip_grad_norm")

    def optimizer_of(model: AnomalyModel) -> torch.optim.Adam | None:
        model.to(options.device)
        return _optimizer(model, config.optimizer) if model.needs_training else None

    seed_everything(config.seed)
    if resume and run.last_checkpoint.is_file():
        model, optimizer, state = _restore(config, run, optimizer_of)
        log(f"resuming {run.root} after epoch {state.epoch} (step {state.step})")
    else:
        model = build_model(config.model, **config.model_config)
        optimizer, state = optimizer_of(model), _State(0, 0, [])
    if optimizer is not None:
        epochs = tqdm(range(state.epoch, config.epochs), initial=state.epoch,
                      total=config.epochs, desc="train", unit="epoch",
                      disable=not options.progress, file=sys.stderr)
        for epoch in epochs:
            loader = DataLoader(augmented, batch_size=config.batch_size, shuffle=True,
                                drop_last=True, num_workers=options.workers,
                                generator=epoch_generator(config.seed, epoch))
            start = time.perf_counter()
            loss = _train_epoch(model, optimizer, clip, loader, state, run, options,
                                f"epoch {epoch + 1}/{config.epochs}")
            seconds = time.perf_counter() - start
            state.epoch += 1
            state.history.append({"epoch": state.epoch, "loss": loss, "steps": len(loader),
                                  "seconds": round(seconds, 3)})
            write_json(run.history, state.history)  # first: a resume truncates it to last.pt
            save_checkpoint(run.last_checkpoint, model, optimizer, state.epoch, state.step,
                            config.to_json())
            epochs.set_postfix(loss=format(loss, LOSS_FORMAT))
            log(f"epoch {state.epoch}/{config.epochs}: loss {loss:{LOSS_FORMAT}}, "
                f"{len(loader) / seconds:.2f} steps/s")
    model.eval()
    fit_loader = DataLoader(plain, batch_size=config.batch_size, num_workers=options.workers)
    model.fit_normal(_images(fit_loader, options.device))
    save_checkpoint(run.final_checkpoint, model, None, state.epoch, state.step,
                    config.to_json())
    log(f"final model after {state.epoch} epochs ({state.step} steps): {run.final_checkpoint}")
    return model
