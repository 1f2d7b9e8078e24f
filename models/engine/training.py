"""The training loop: seeded, checkpointed after every epoch and on a stop signal, resumable to
the same weights, on one process or several (``torchrun``, see :mod:`.distributed`).

The reported model is the final one (after the last epoch and ``fit_normal``) and, with a
validation split (``RunConfig.val_fraction``, see :mod:`.validation`), also the best epoch on
the held-out training images with pasted defects (``best.pt``): no checkpoint is ever chosen by
looking at the test set, which training never opens. A resumed run equals an uninterrupted
one (bit for bit on the CPU, see :mod:`.sampling`): a checkpoint written on SIGINT or SIGTERM,
after the last completed step of an unfinished epoch, also holds that epoch's step count and
loss sum, and the resumed run skips the epoch's finished batches without loading them.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..base import MODELS, AnomalyModel, build_model
from ..data import Augmentation, Item, Split
from ..data.pasted_anomalies import PastedAnomalies
from ..errors import CheckpointError, ConfigError, Interrupted, NonFiniteLossError
from .checkpoint import load_checkpoint, load_model, restore_rng_states, save_checkpoint
from .config import RunConfig
from .distributed import BATCH_COUPLED_MODELS, Distributed
from .files import write_json
from .resume import ResumePoint, TrainingState, make_optimizer, resume_point
from .run_folder import RunFolder
from .sampling import TrainingImages, epoch_loader, seed_everything
from .signals import StopSignals
from .thresholds import fit_thresholds
from .validation import (
    VALIDATION_KEY,
    VALIDATION_SEED,
    SelectBy,
    Validator,
    best_record,
    fit_on,
    fitted_images,
)

__all__ = ["TrainOptions", "resume_command", "train"]

LOSS_FORMAT = ".5g"
"""How losses are printed in the progress bar and the log."""

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


def _check_finite(value: float, what: str, state: TrainingState, run: RunFolder,
                  optimizer: dict[str, Any]) -> None:
    """Raise :class:`NonFiniteLossError` naming the step unless ``value`` is finite.

    The advice starts a new run: ``--resume`` keeps the run's settings, so it would repeat
    the step that diverged.
    """
    if math.isfinite(value):
        return
    clip = optimizer.get("clip_grad_norm")
    lower = (f"a lower --lr (now {optimizer.get('lr')}) or a {'lower ' if clip else ''}"
             f"--clip-grad-norm (now {clip or 'none'})")
    if run.last_checkpoint.is_file():
        advice = (f"the last good checkpoint is {run.last_checkpoint} (epoch {state.epoch}); "
                  f"--resume would repeat it with the same settings: check the data, and start "
                  f"again with {lower} and --overwrite")
    else:
        advice = (f"no checkpoint was written yet: check the data, and run the command again "
                  f"with {lower}")
    raise NonFiniteLossError(
        f"the {what} became {value} at step {state.step + 1} (epoch {state.epoch + 1}); {advice}"
    )


class _Loop:
    """The training steps of one process: DDP-wrapped loss, NaN checks, stop signals."""

    def __init__(self, config: RunConfig, run: RunFolder, options: TrainOptions,
                 model: AnomalyModel, optimizer: torch.optim.Optimizer,
                 state: TrainingState, validator: Validator | None) -> None:
        self.config, self.run, self.options = config, run, options
        self.model, self.optimizer, self.state = model, optimizer, state
        self.validator = validator
        self.loss_of = options.distributed.wrap(_Loss(model), options.device)
        self.parameters = model.trainable_parameters()
        self.clip = config.optimizer.get("clip_grad_norm")
        self.stop = options.stop or StopSignals()  # not entered: records nothing
        self.synced = False  # whether rank 0's weights were copied after the first step

    def epoch(self, images: TrainingImages, log: _Logger) -> Interrupted | None:
        """Train the epoch under way to its end (from where a stop left it).

        Returns:
            ``None``; or, when a process received a stop signal, the :class:`Interrupted` to
            raise, after ``last.pt`` was written at the last completed step.
        """
        state, config = self.state, self.config
        steps = len(images) // config.batch_size
        loader = epoch_loader(images, config.batch_size, config.seed, state.epoch,
                              state.epoch_steps, self.options.distributed, self.options.workers)
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
        if config.validates(state.epoch):
            self.validate(log)
        return None

    def validate(self, log: _Logger) -> None:
        """Score the epoch just finished on the validation images (rank 0; the others wait),
        add the metrics to its history record and rewrite ``history.json``; ``best.pt`` is
        written first, so a crash between the two is repaired by scoring again on resume.

        Raises:
            NonFiniteLossError: non-finite validation maps (rank 0).
            RuntimeError: on the other ranks, when rank 0 failed: they stop with it instead
                of waiting for it.
        """
        if self.validator is None:
            return
        state, distributed = self.state, self.options.distributed
        failure: Exception | None = None
        if distributed.is_main:
            try:
                scores = self.validator.score(self.model, state.epoch, state.step,
                                              state.history[:-1])
                state.history[-1][VALIDATION_KEY] = scores
                write_json(self.run.history, state.history)
                log(f"epoch {state.epoch} on validation: {_scores_text(scores)}"
                    f"{' (best so far)' if scores['best'] else ''}, {scores['seconds']:.1f} s")
            except Exception as error:  # told to the others first, then raised
                failure = error
        # Instead of a barrier: every process learns whether rank 0 failed.
        _, failed = distributed.reduce_step(torch.zeros((), device=self.options.device),
                                            failure is not None)
        if failure is not None:
            raise failure
        if failed:
            raise RuntimeError(f"rank 0 failed while scoring epoch {state.epoch} on the "
                               "validation images: its error says why")

    def _step(self, images: Tensor) -> tuple[float, int | None]:
        """One optimizer step; returns the loss (averaged over processes) and the stop signal
        received by any process, if any."""
        state = self.state
        loss = self.loss_of(images)
        value, stopping = self.options.distributed.reduce_step(
            loss, self.stop.received is not None)
        _check_finite(value, "loss", state, self.run, self.config.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.parameters, self.clip))
            _check_finite(norm, "gradient norm", state, self.run, self.config.optimizer)
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


def _scores_text(scores: dict[str, Any]) -> str:
    """Validation metrics as a log line's words."""
    return ", ".join(f"{key} {scores[key]:.4f}" for key in
                     (SelectBy.AUPRO.value, SelectBy.PIXEL_AUROC.value, "image_auroc"))


def _validation_note(config: RunConfig, plain: Dataset[Item],
                     validation: PastedAnomalies | None, run: RunFolder) -> str:
    """What the run validates on, for ``train.log``."""
    if validation is None:
        return (f"no validation split (val_fraction {config.val_fraction}, model "
                f"{config.model}): the final epoch is the only model reported")
    held = len(validation.indices)
    return (f"validation: {held} of {held + len(plain)} training images held out, scored as "
            f"they are and with pasted defects after {_every(config)}; the best epoch by "
            f"{config.select_by} is kept as {run.best_checkpoint}")


def _augmentation_note(config: RunConfig) -> str:
    """Whether the training images are augmented and why, for ``train.log``."""
    why = f"--augment {config.augment}"
    if config.augment == Augmentation.AUTO.value:
        why += f": {config.model} turns {MODELS[config.model].augment_rule}"
    if config.augments():
        return f"augmentation: random flips and quarter turns of the training images ({why})"
    return f"augmentation: none, the training images as they are ({why})"


def _every(config: RunConfig) -> str:
    """When validation scores, in words."""
    if config.val_every == 1:
        return "every epoch"
    return f"every {config.val_every} epochs and the last"


class _Data(NamedTuple):
    """The training images keyed for training (augmented for textures), the plain ones (for
    ``fit_normal`` and the thresholds), and the validation images (``None``: no validation)."""

    images: TrainingImages
    plain: Dataset[Item]
    validation: PastedAnomalies | None


def _training_data(config: RunConfig) -> _Data:
    """The training images, less those held out for validation (see :mod:`.validation`).

    Raises:
        ConfigError: fewer training images than a batch; a validation split that leaves too
            few on either side; an unknown ``select_by`` or ``augment``; ``val_every`` below
            1.
    """
    plain = config.data.dataset(Split.TRAIN.value)
    if len(plain) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(plain)} images, fewer than one batch of "
            f"{config.batch_size}; lower --batch-size"
        )
    try:
        SelectBy(config.select_by)
    except ValueError as error:
        raise ConfigError(f"--select-by: {error}") from error
    if isinstance(config.val_every, bool) or not isinstance(config.val_every, int) \
            or config.val_every < 1:
        raise ConfigError(f"--val-every must be a whole number of epochs, 1 or more, got "
                          f"{config.val_every!r}")
    kept, held_out = fitted_images(plain, config.model, config.val_fraction, config.batch_size)
    return _Data(TrainingImages(kept, config.seed, config.augments()), kept,
                 PastedAnomalies(plain, held_out, VALIDATION_SEED) if held_out else None)


def _stopped(error: Interrupted, run: RunFolder) -> Interrupted:
    """A signal that arrived outside the training steps, with what is kept and what to do."""
    kept = (f"{run.last_checkpoint} is kept; continue with: {resume_command(run)}"
            if run.last_checkpoint.is_file()
            else "no checkpoint was written yet: start the run again")
    return Interrupted(error.signal_number, f"{error}; {kept}")


def _train_epochs(loop: _Loop, images: TrainingImages, log: _Logger) -> Interrupted | None:
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
                  options: TrainOptions, state: TrainingState) -> None:
    """``fit_normal`` on the plain training images, then ``threshold.json`` and ``final.pt``;
    with a best epoch, its thresholds too (``best.pt`` is fitted when written)."""
    fit_on(model, plain, config.batch_size, options.device, options.workers)
    thresholds = fit_thresholds(model, plain, config.batch_size, options.device, options.workers)
    write_json(run.threshold, thresholds.to_json())
    save_checkpoint(run.final_checkpoint, model, None, state.epoch, state.step, config.to_json())
    if best_record(state.history, config.select_by) is not None:
        best = load_model(run.best_checkpoint, options.device, config.model)
        write_json(run.best_threshold, fit_thresholds(
            best, plain, config.batch_size, options.device, options.workers).to_json())


def _check_best(run: RunFolder, history: list[dict[str, Any]], select_by: str) -> None:
    """Refuse to resume when ``best.pt`` is not the best epoch ``history.json`` records.

    Raises:
        CheckpointError: ``best.pt`` is missing, unreadable or of another epoch.
    """
    best = best_record(history, select_by)
    if best is None:
        return
    advice = ("the best epoch cannot be recovered: start the run anew with --overwrite, or "
              "evaluate checkpoints/last.pt only")
    epoch = load_checkpoint(run.best_checkpoint, advice=advice)["epoch"]
    if epoch != best["epoch"]:
        raise CheckpointError(
            f"{run.best_checkpoint} holds epoch {epoch}, but {run.history} records epoch "
            f"{best['epoch']} as the best; {advice}"
        )


def train(config: RunConfig, run: RunFolder, options: TrainOptions, resume: bool = False,
          start: ResumePoint | None = None) -> AnomalyModel | None:
    """Train a model, fit it on the normal images and write ``checkpoints/final.pt``.

    After every epoch ``history.json`` and then ``checkpoints/last.pt`` are written
    atomically; on SIGINT or SIGTERM (with ``options.stop``) ``last.pt`` is written after the
    current step. With ``resume`` training continues from ``last.pt`` (model, optimizer,
    random states, epoch, step, position in the epoch), so the result equals an
    uninterrupted run's on the CPU. After training, rank 0 fits the model, writes
    ``threshold.json`` (see :func:`~.predict.fit_thresholds`) and ``final.pt``.

    With ``config.val_fraction`` above 0 (see :mod:`.validation`), the held-out training
    images are neither trained on nor fitted on; after each epoch's ``last.pt`` rank 0 (the
    others wait) scores a fitted copy of the model on them with pasted defects, adds the
    metrics to the epoch's ``history.json`` record, and writes ``best.pt`` when the epoch is
    the best so far; ``best_threshold.json`` is fitted after training. The test split is
    never opened.

    Args:
        config: the run's settings; written to ``config.json``.
        run: the prepared run folder.
        options: device, workers, progress bars, processes, signal handlers.
        resume: continue from ``checkpoints/last.pt`` if it exists.
        start: ``last.pt`` already read by :func:`resume_point` (implies ``resume``).

    Returns:
        The final model, in eval mode, on ``options.device``; ``None`` on ranks other than 0.

    Raises:
        Interrupted: a stop signal; ``last.pt`` holds the last completed step.
        NonFiniteLossError: a NaN or infinite loss; ``last.pt`` keeps the last good epoch.
        CheckpointError: ``last.pt`` cannot be resumed from, or ``best.pt`` is not the best
            epoch ``history.json`` records.
        ConfigError: a batch larger than the training set or not split evenly over the
            processes, a validation split leaving too few images, an unknown ``select_by``,
            or fewer epochs than already run.
        DatasetError: missing or unreadable images.
    """
    log = _Logger(run, options)
    distributed = options.distributed
    if start is None and resume and run.last_checkpoint.is_file():
        start = resume_point(config, run, options.device)
    images, plain, validation = _training_data(config)
    if distributed.is_main:  # only once everything is checked
        write_json(run.config, config.to_json())
    if distributed.is_distributed and config.model in BATCH_COUPLED_MODELS:
        log(f"note: {config.model}'s loss couples the images of a batch; each of the "
            f"{distributed.world_size} processes couples only its own "
            f"{config.batch_size // distributed.world_size}, so the result differs from one "
            f"process with --batch-size {config.batch_size}")
    if distributed.is_main:  # in train.log only: the epochs' lines show the scores
        run.append_log(_validation_note(config, plain, validation, run))
        if MODELS[config.model].needs_training:
            run.append_log(_augmentation_note(config))
    seed_everything(config.seed)
    stopped = None
    try:
        if start is not None:
            restore_rng_states(start.rng_states)
            model, optimizer, state = start.model, start.optimizer, start.state
            log(f"resuming {run.root} after step {state.step} (epoch {state.epoch}, "
                f"{state.epoch_steps} steps into the next)")
        else:
            model = build_model(config.model, **config.model_config).to(options.device)
            optimizer = make_optimizer(model, config.optimizer) if model.needs_training else None
            state = TrainingState(0, 0, [])
        validator = None if validation is None else Validator(
            plain, validation, config.select_by, run.best_checkpoint, config.to_json(),
            config.batch_size, options.device, options.workers, run.best_threshold)
        if optimizer is not None:
            loop = _Loop(config, run, options, model, optimizer, state, validator)
            if (validator is not None and state.history and state.epoch_steps == 0
                    and VALIDATION_KEY not in state.history[-1]
                    and config.validates(state.epoch)):
                loop.validate(log)  # stopped between last.pt and the epoch's validation
            if start is not None:  # every process: they stop together
                _check_best(run, state.history, config.select_by)
            stopped = _train_epochs(loop, images, log)
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
    best = best_record(state.history, config.select_by)
    if best is not None:
        log(f"best on validation by {config.select_by}: epoch {best['epoch']} "
            f"({_scores_text(best[VALIDATION_KEY])}): {run.best_checkpoint}")
    return model
