"""The training loop: seeded, checkpointed after every epoch and on a stop signal, resumable to
the same weights, on one process or several (``torchrun``, see :mod:`.distributed`).

The reported model is always the final one (after the last epoch and ``fit_normal``): no
checkpoint is ever chosen by looking at the test set.

Why a resumed run equals an uninterrupted one (bit for bit on the CPU): an epoch's data order
is a function of the seed and the epoch only; texture augmentation draws from a generator of
``(seed, epoch, image index)``, so it does not matter which process, worker or step loads an
image; everything else random draws from the global generators, whose states every
checkpoint holds. A checkpoint written on SIGINT or SIGTERM, after the last completed step of
an unfinished epoch, also holds that epoch's step count and loss sum, and the resumed run
skips the epoch's finished batches without loading them.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm.auto import tqdm

from .base import AnomalyModel, build_model
from .checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    restore_rng_states,
    save_checkpoint,
)
from .data import Item, Split, TextureAugment
from .distributed import BATCH_COUPLED_MODELS, Distributed, per_process_batch
from .errors import CheckpointError, ConfigError, Interrupted, NonFiniteLossError
from .predict import fit_thresholds
from .run import RunConfig, RunFolder, read_json, write_json

__all__ = [
    "STOP_SIGNALS",
    "StopSignals",
    "TrainOptions",
    "epoch_generator",
    "resume_command",
    "seed_everything",
    "train",
]

LOSS_FORMAT = ".5g"
"""How losses are printed in the progress bar and the log."""

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and what schedulers and ``kill`` send: both stop training after the current step."""


class StopSignals:
    """SIGINT and SIGTERM handlers for the duration of a command (a context manager).

    Inside :meth:`deferred` (the training steps) the first signal is only recorded in
    :attr:`received`, and the training loop stops after the current step, saving a
    checkpoint. Anywhere else, and for a second signal, the handler raises
    :class:`~.errors.Interrupted` at once: every file is written atomically, so nothing is
    left half-written. The previous handlers are restored on exit; outside the main thread
    (where Python allows no handlers) signals keep theirs. The handler prints nothing: a print
    from a signal handler can interrupt a print in progress.
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


@dataclass(frozen=True)
class TrainOptions:
    """How a run is executed; none of it changes the result on a given device (a distributed
    run equals one process up to floating-point rounding, see :mod:`.distributed`).

    Attributes:
        device: where the model runs.
        workers: data-loading worker processes (0: in the main process).
        progress: show tqdm progress bars.
        quiet: print nothing but errors (the log file is still written).
        distributed: this process's place in a ``torchrun`` job.
        stop: the command's signal handlers; ``None``: signals keep their handlers.
    """

    device: torch.device
    workers: int = 0
    progress: bool = True
    quiet: bool = False
    distributed: Distributed = field(default_factory=Distributed)
    stop: StopSignals | None = None


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _mixed_seed(*keys: int) -> int:
    """A 62-bit seed mixed from ``keys``: nearby keys give unrelated seeds."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 2


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's data loader: a function of the seed and the epoch only, so
    a resumed run draws the same as an uninterrupted one."""
    return torch.Generator().manual_seed(_mixed_seed(seed, epoch))


def resume_command(run: RunFolder) -> str:
    """The command that continues ``run``."""
    return f"flowkit train --out {run.root} --resume"


class _Logger:
    """Writes a line to ``train.log`` and, unless quiet, to stderr (above the progress bars);
    silent except on rank 0."""

    def __init__(self, run: RunFolder, options: TrainOptions) -> None:
        self.run, self.options = run, options

    def __call__(self, line: str) -> None:
        if not self.options.distributed.is_main:
            return
        self.run.append_log(line)
        if not self.options.quiet:
            tqdm.write(line, file=sys.stderr)


@dataclass
class _State:
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


class _TrainingImages(Dataset[Item]):
    """The training images, indexed by ``(epoch, index)``.

    Texture augmentation (when on) draws from a generator of ``(seed, epoch, index)``: an
    image is augmented the same way whichever process, worker or step loads it.
    """

    def __init__(self, images: Dataset[Item], seed: int, augment: bool) -> None:
        self.images, self.seed, self.augment = images, seed, augment

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> Item:
        epoch, index = key
        item = self.images[index]
        if not self.augment:
            return item
        generator = torch.Generator().manual_seed(_mixed_seed(self.seed, epoch, index))
        image, mask = TextureAugment(generator)(item.image, item.mask)
        return item._replace(image=image, mask=mask)


class _Loss(nn.Module):
    """The model's training loss as ``forward``: DistributedDataParallel synchronizes the
    gradients of what its wrapped ``forward`` computes."""

    def __init__(self, model: AnomalyModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model.loss(images)


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


def _epoch_loader(images: _TrainingImages, config: RunConfig, epoch: int, skip_steps: int,
                  options: TrainOptions) -> DataLoader[Item]:
    """This process's batches of an epoch, after the first ``skip_steps`` (never loaded).

    ``DistributedSampler`` shuffles by the seed and the epoch, drops the tail that fills no
    global batch, and gives process ``r`` of ``n`` every n-th image from the r-th: the
    processes' batches of a step together are the batch one process takes with the same
    global batch. Alone it is a plain seeded shuffle.
    """
    distributed = options.distributed
    per_process = per_process_batch(config.batch_size, distributed.world_size)
    sampler = DistributedSampler(images, num_replicas=distributed.world_size,
                                 rank=distributed.rank, shuffle=True,
                                 seed=_mixed_seed(config.seed), drop_last=True)
    sampler.set_epoch(epoch)
    keys = [(epoch, index) for index in list(sampler)[skip_steps * per_process:]]
    return DataLoader(images, batch_size=per_process, sampler=keys, drop_last=True,
                      num_workers=options.workers, generator=epoch_generator(config.seed, epoch))


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


class _Loop:
    """The training steps of one process: DDP-wrapped loss, NaN checks, stop signals."""

    def __init__(self, config: RunConfig, run: RunFolder, options: TrainOptions,
                 model: AnomalyModel, optimizer: torch.optim.Optimizer, state: _State) -> None:
        self.config, self.run, self.options = config, run, options
        self.model, self.optimizer, self.state = model, optimizer, state
        self.loss_of = options.distributed.wrap(_Loss(model), options.device)
        self.parameters = model.trainable_parameters()
        self.clip = config.optimizer.get("clip_grad_norm")
        self.stop = options.stop or StopSignals()  # not entered: records nothing
        self.synced = False  # whether rank 0's weights were copied after the first step

    def epoch(self, images: _TrainingImages, log: _Logger) -> Interrupted | None:
        """Train the epoch under way to its end (from where a stop left it).

        Returns:
            ``None``; or, when a process received a stop signal, the :class:`Interrupted` to
            raise, after ``last.pt`` was written at the last completed step.
        """
        state, config = self.state, self.config
        steps = len(images) // config.batch_size
        loader = _epoch_loader(images, config, state.epoch, state.epoch_steps, self.options)
        self.model.train()
        bar = tqdm(_images(loader, self.options.device), total=steps, initial=state.epoch_steps,
                   desc=f"epoch {state.epoch + 1}/{config.epochs}", unit="step", leave=False,
                   disable=not self.options.progress, file=sys.stderr)
        started = time.perf_counter() - state.epoch_seconds
        for images_batch in bar:
            value, stop = self._step(images_batch)
            state.epoch_seconds = time.perf_counter() - started
            bar.set_postfix(loss=format(value, LOSS_FORMAT), refresh=False)
            if stop is not None:
                return self._stop(stop, steps)
        rate = steps / max(state.epoch_seconds, 1e-9)
        record = state.finish_epoch()
        if self.options.distributed.is_main:
            write_json(self.run.history, state.history)  # first: a resume truncates it
            save_checkpoint(self.run.last_checkpoint, self.model, self.optimizer, state.epoch,
                            state.step, config.to_json())
        log(f"epoch {state.epoch}/{config.epochs}: loss {record['loss']:{LOSS_FORMAT}}, "
            f"{rate:.2f} steps/s")
        return None

    def _step(self, images: Tensor) -> tuple[float, int | None]:
        """One optimizer step; returns the loss (averaged over processes) and the stop signal
        received by any process, if any."""
        state = self.state
        loss = self.loss_of(images)
        value, stopping = self.options.distributed.reduce_step(
            loss, self.stop.received is not None)
        _check_finite(value, "loss", state, self.run)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.clip))
            _check_finite(norm, "gradient norm", state, self.run)
        self.optimizer.step()
        if not self.synced:
            self.options.distributed.broadcast_state(self.model)
            self.synced = True
        state.step += 1
        state.epoch_steps += 1
        state.epoch_loss += value
        # A process that got no signal itself stops as SIGTERM (what torchrun forwards).
        return value, (self.stop.received or signal.SIGTERM) if stopping else None

    def _stop(self, number: int, steps: int) -> Interrupted:
        """Save the last completed step to ``last.pt``; the :class:`Interrupted` to raise."""
        state = self.state
        if self.options.distributed.is_main:
            save_checkpoint(self.run.last_checkpoint, self.model, self.optimizer, state.epoch,
                            state.step, self.config.to_json(), state.partial_epoch())
        self.options.distributed.barrier()  # torchrun must not stop rank 0 mid-save
        name = signal.Signals(number).name
        return Interrupted(number, (
            f"stopped by {name} after step {state.step} (epoch {state.epoch + 1}, "
            f"{state.epoch_steps} of {steps} steps), saved in {self.run.last_checkpoint}; "
            f"continue with: {resume_command(self.run)}"
        ))


def _restore(config: RunConfig, run: RunFolder, device: torch.device
             ) -> tuple[AnomalyModel, torch.optim.Adam | None, _State]:
    """Model (on ``device``), optimizer and state from ``last.pt``, with every random source
    restored."""
    checkpoint = load_checkpoint(run.last_checkpoint, config.model)
    if checkpoint["epoch"] > config.epochs:
        raise ConfigError(
            f"the run in {run.root} has already trained {checkpoint['epoch']} epochs; "
            f"pass --epochs {checkpoint['epoch']} or more to resume it"
        )
    model = model_from_checkpoint(checkpoint, run.last_checkpoint).to(device)
    optimizer = _optimizer(model, config.optimizer) if model.needs_training else None
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
    partial = checkpoint["partial_epoch"]
    state = _State(checkpoint["epoch"], checkpoint["step"], history, partial["steps"],
                   partial["loss_sum"], partial["seconds"])
    return model, optimizer, state


def _training_images(config: RunConfig) -> tuple[_TrainingImages, Dataset[Item]]:
    """The training images keyed for training (augmented for textures), and plain ones (for
    ``fit_normal`` and the thresholds)."""
    plain = config.data.dataset(Split.TRAIN.value)
    if len(plain) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(plain)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    return _TrainingImages(plain, config.seed, config.data.augment), plain


def _stopped(error: Interrupted, run: RunFolder) -> Interrupted:
    """A signal that arrived outside the training steps, with what is kept and what to do."""
    kept = (f"{run.last_checkpoint} is kept; continue with: {resume_command(run)}"
            if run.last_checkpoint.is_file()
            else "no checkpoint was written yet: start the run again")
    return Interrupted(error.signal_number, f"{error}; {kept}")


def _train_epochs(loop: _Loop, images: _TrainingImages, log: _Logger) -> Interrupted | None:
    """The remaining epochs, with a progress bar over them; what :meth:`_Loop.epoch` returns
    when a stop signal ends them."""
    state, config, options = loop.state, loop.config, loop.options
    epochs = tqdm(range(state.epoch, config.epochs), initial=state.epoch, total=config.epochs,
                  desc="train", unit="epoch", disable=not options.progress, file=sys.stderr)
    with loop.stop.deferred():
        for _ in epochs:
            stopped = loop.epoch(images, log)
            if stopped is not None:
                return stopped
            epochs.set_postfix(loss=format(state.history[-1]["loss"], LOSS_FORMAT))
    return None


def _fit_and_save(model: AnomalyModel, plain: Dataset[Item], config: RunConfig, run: RunFolder,
                  options: TrainOptions, state: _State) -> None:
    """``fit_normal`` on the plain training images, then ``threshold.json`` and ``final.pt``."""
    model.eval()
    loader = DataLoader(plain, batch_size=config.batch_size, num_workers=options.workers)
    model.fit_normal(_images(loader, options.device))
    thresholds = fit_thresholds(model, plain, config.batch_size, options.device, options.workers)
    write_json(run.threshold, thresholds.to_json())
    save_checkpoint(run.final_checkpoint, model, None, state.epoch, state.step, config.to_json())


def train(config: RunConfig, run: RunFolder, options: TrainOptions,
          resume: bool = False) -> AnomalyModel | None:
    """Train a model, fit it on the normal images and write ``checkpoints/final.pt``.

    After every epoch ``history.json`` and then ``checkpoints/last.pt`` are written
    atomically; on SIGINT or SIGTERM (with ``options.stop``) ``last.pt`` is written after the
    current step. With ``resume`` training continues from ``last.pt`` (model, optimizer,
    random states, epoch, step, position in the epoch), so the result equals an
    uninterrupted run's on the CPU. After training, rank 0 fits the model, writes
    ``threshold.json`` (see :func:`~.predict.fit_thresholds`) and ``final.pt``.

    Args:
        config: the run's settings; written to ``config.json``.
        run: the prepared run folder.
        options: device, workers, progress bars, processes, signal handlers.
        resume: continue from ``checkpoints/last.pt`` if it exists.

    Returns:
        The final model, in eval mode, on ``options.device``; ``None`` on ranks other than 0.

    Raises:
        Interrupted: a stop signal; ``last.pt`` holds the last completed step.
        NonFiniteLossError: a NaN or infinite loss; ``last.pt`` keeps the last good epoch.
        CheckpointError: ``last.pt`` cannot be resumed from.
        ConfigError: a batch larger than the training set or not split evenly over the
            processes, or fewer epochs than already run.
        DatasetError: missing or unreadable images.
    """
    log = _Logger(run, options)
    distributed = options.distributed
    if distributed.is_main:
        write_json(run.config, config.to_json())
    images, plain = _training_images(config)
    if distributed.is_distributed and config.model in BATCH_COUPLED_MODELS:
        log(f"note: {config.model}'s loss couples the images of a batch; each of the "
            f"{distributed.world_size} processes couples only its own "
            f"{config.batch_size // distributed.world_size}, so the result differs from one "
            f"process with --batch-size {config.batch_size}")
    seed_everything(config.seed)
    stopped = None
    try:
        if resume and run.last_checkpoint.is_file():
            model, optimizer, state = _restore(config, run, options.device)
            log(f"resuming {run.root} after step {state.step} (epoch {state.epoch}, "
                f"{state.epoch_steps} steps into the next)")
        else:
            model = build_model(config.model, **config.model_config).to(options.device)
            optimizer = _optimizer(model, config.optimizer) if model.needs_training else None
            state = _State(0, 0, [])
        if optimizer is not None:
            stopped = _train_epochs(_Loop(config, run, options, model, optimizer, state),
                                    images, log)
        if stopped is None and distributed.is_main:
            _fit_and_save(model, plain, config, run, options, state)
    except Interrupted as error:  # outside the training steps, or a second signal
        raise _stopped(error, run) from None
    if stopped is not None:
        if distributed.is_main:
            run.append_log(str(stopped))
        raise stopped
    if not distributed.is_main:
        return None
    log(f"final model after {state.epoch} epochs ({state.step} steps): {run.final_checkpoint}")
    return model
