"""Choosing the training epoch without the test set: a validation split carved from the training
images, with synthetic defects pasted on it, scored after every epoch (or every
``--val-every`` epochs and the last).

Why: the official PyramidFlow code reports, per metric, the best epoch on the test set, which
overstates what a user gets. Here ``--val-fraction F`` holds out ``ceil(F * N)`` of the ``N``
training images, at least :data:`MIN_VALIDATION_IMAGES` (never trained on, nor used by
``fit_normal`` or the thresholds); each is scored as it is and with a pasted defect
(:class:`~flowkit.models.data.pasted_anomalies.PastedAnomalies`: scratch, stain, hole, patch,
faint stain, hairline in turn, pixel-exact masks). After each epoch's checkpoint a copy of the
model is fitted (``fit_normal`` on the remaining training images, as the final model
is) and scored: pixel AUROC, AUPRO@0.3 and image AUROC go into ``history.json``. The epoch
with the highest ``--select-by`` metric (ties: the earlier epoch) is kept as
``checkpoints/best.pt``, fitted like ``final.pt``.

The split and the pasted defects are functions of the data only (the number of training
images and :data:`VALIDATION_SEED`), not of ``--seed``: runs with different seeds train on the
same images and are validated on the same defects, so their spread measures the training's
randomness alone. A larger fraction holds out a superset of a smaller one's images.

Scoring changes nothing of the training: it works on a copy of the model and restores every
random generator's state, so a run with validation trains the same weights as one without
on the same images, and a resumed run still equals an uninterrupted one.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..base import MODELS, AnomalyModel
from ..data import Choice, Item
from ..data.pasted_anomalies import PastedAnomalies
from ..errors import ConfigError, NonFiniteLossError
from ..metrics import DEFAULT_FPR_LIMIT, aupro, image_auroc, pixel_auroc
from .checkpoint import capture_rng_states, restore_rng_states, save_checkpoint
from .evaluate import AUPRO_KEY, predict_dataset

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "MAX_VALIDATIONS",
    "MIN_VALIDATION_IMAGES",
    "VALIDATION_KEY",
    "VALIDATION_SEED",
    "SelectBy",
    "ValidationSplit",
    "Validator",
    "best_record",
    "default_val_every",
    "fit_on",
    "fitted_images",
    "split_training",
]

DEFAULT_VAL_FRACTION = 0.1
"""The fraction of the training images ``flowkit train`` holds out unless told otherwise."""

MIN_VALIDATION_IMAGES = 4
"""Held-out images needed at least: each obvious defect kind (scratch, stain, hole, patch)
pasted once, and as many normal twins; the two low-contrast kinds come next in the rotation
(:data:`~flowkit.models.data.pasted_anomalies.PASTED_DEFECTS`), so 6 images or more get every
kind."""

MAX_VALIDATIONS = 10
"""Validations per run by default: ``--val-every`` is ``ceil(epochs / 10)`` unless given, so a
long run (CS-Flow's 30 epochs) does not spend a quarter of its time scoring."""

VALIDATION_SEED = 0
"""Seeds the split and the pasted defects: the same for every run of the same data."""

VALIDATION_KEY = "validation"
"""The key of an epoch's validation metrics in its ``history.json`` record."""

_FRACTION_DIGITS = 10_000  # advised fractions: 4 decimals, rounded in the safe direction


class SelectBy(Choice):
    """The validation metric the best epoch maximizes (a key of ``metrics.json``)."""

    AUPRO = AUPRO_KEY
    PIXEL_AUROC = "pixel_auroc"


@dataclass(frozen=True)
class ValidationSplit:
    """Which training images train, and which are held out for validation (sorted indices)."""

    train: list[int]
    held_out: list[int]


def split_training(num_images: int, fraction: float, batch_size: int) -> ValidationSplit:
    """Hold out ``ceil(fraction * num_images)`` training images, at least
    :data:`MIN_VALIDATION_IMAGES`, chosen by :data:`VALIDATION_SEED` and ``num_images`` only.

    Args:
        num_images: the training images.
        fraction: in [0, 1); 0 holds out none.
        batch_size: the training batch: at least one must remain.

    Returns:
        The split.

    Raises:
        ConfigError: a fraction outside [0, 1), or fewer than ``batch_size`` images left to
            train on; the message names the fraction or batch that works.

    Example:
        >>> split = split_training(48, 0.1, 4)
        >>> len(split.held_out), len(split.train), set(split.held_out) & set(split.train)
        (5, 43, set())
    """
    if not 0 <= fraction < 1:
        raise ConfigError(f"--val-fraction must lie in [0, 1), got {fraction}; e.g. "
                          f"--val-fraction {DEFAULT_VAL_FRACTION}, or 0 for no validation")
    held = max(MIN_VALIDATION_IMAGES, math.ceil(fraction * num_images)) if fraction > 0 else 0
    if held and num_images - held < batch_size:
        spare = num_images - MIN_VALIDATION_IMAGES  # the most images left to train on
        if spare >= batch_size:
            largest = math.floor((num_images - batch_size) / num_images * _FRACTION_DIGITS)
            fix = (f"pass --val-fraction {largest / _FRACTION_DIGITS} or less, or a smaller "
                   "--batch-size")
        elif spare >= 1:
            smallest = math.floor(MIN_VALIDATION_IMAGES / num_images * _FRACTION_DIGITS)
            fix = (f"pass --batch-size {spare} or less with --val-fraction "
                   f"{smallest / _FRACTION_DIGITS} (it holds out {MIN_VALIDATION_IMAGES}, the "
                   "fewest validation takes)")
        else:
            fix = (f"validation takes {MIN_VALIDATION_IMAGES} images and training at least one: "
                   "add training images")
        raise ConfigError(
            f"--val-fraction {fraction} holds out {held} of the {num_images} training images, "
            f"leaving {num_images - held}, fewer than one batch of {batch_size}: {fix}, or "
            "pass --val-fraction 0 to train on all of them without validation (the final "
            "epoch is then the only model)"
        )
    order = np.random.default_rng([VALIDATION_SEED, num_images]).permutation(num_images)
    return ValidationSplit(sorted(order[held:].tolist()), sorted(order[:held].tolist()))


def default_val_every(epochs: int) -> int:
    """The epochs between validations when ``--val-every`` is not given: at most
    :data:`MAX_VALIDATIONS` per run (every epoch up to 10 epochs), and always the last.

    Example:
        >>> [default_val_every(n) for n in (5, 10, 15, 30)]
        [1, 1, 2, 3]
    """
    return max(1, math.ceil(epochs / MAX_VALIDATIONS))


def fitted_images(plain: Dataset[Item], model: str, fraction: float,
                  batch_size: int) -> tuple[Dataset[Item], list[int]]:
    """The training images ``fit_normal`` and the thresholds use, and those held out for
    validation (none for a fraction of 0 or a model fitted without training).

    Args:
        plain: the training split, not augmented.
        model: the registered model's name.
        fraction: the run's ``val_fraction``.
        batch_size: the training batch.

    Raises:
        ConfigError: as :func:`split_training`.
    """
    split = split_training(len(plain), fraction, batch_size)  # type: ignore[arg-type]
    if not split.held_out or not MODELS[model].needs_training:
        return plain, []
    return Subset(plain, split.train), split.held_out


def fit_on(model: AnomalyModel, images: Dataset[Item], batch_size: int, device: torch.device,
           workers: int = 0) -> None:
    """Put ``model`` in eval mode and ``fit_normal`` it on ``images`` (not augmented)."""
    model.eval()
    loader = DataLoader(images, batch_size=batch_size, num_workers=workers)
    model.fit_normal(batch.image.to(device, non_blocking=True) for batch in loader)


def best_record(history: list[dict[str, Any]], select_by: SelectBy | str) -> dict[str, Any] | None:
    """The history record of the best validated epoch: the highest ``select_by`` metric, the
    earliest epoch among equals; ``None`` when no epoch was validated.

    Example:
        >>> history = [{"epoch": 1, "validation": {"pixel_auroc": 0.9}},
        ...            {"epoch": 2, "validation": {"pixel_auroc": 0.95}},
        ...            {"epoch": 3, "validation": {"pixel_auroc": 0.95}}]
        >>> best_record(history, "pixel_auroc")["epoch"]
        2
    """
    key = SelectBy(select_by).value
    best = None
    for record in history:
        if VALIDATION_KEY in record and (
                best is None or record[VALIDATION_KEY][key] > best[VALIDATION_KEY][key]):
            best = record
    return best


class Validator:
    """Scores a model on the validation images and keeps the best epoch's fitted copy.

    Args:
        fit_images: the images ``fit_normal`` sees (the training images left after the split,
            not augmented).
        validation: the held-out images with and without pasted defects.
        select_by: the metric the best epoch maximizes.
        best_path: where the best epoch's fitted model is written (``checkpoints/best.pt``).
        best_threshold: the thresholds of the best model (fitted after training): removed
            when a new best model is written, so that they never go with another epoch's.
        run_config: the run's settings, stored in the checkpoint.
        batch_size: images per batch.
        device: where the model runs.
        workers: data-loading worker processes.
    """

    def __init__(self, fit_images: Dataset[Item], validation: PastedAnomalies,
                 select_by: SelectBy | str, best_path: Path, run_config: dict[str, Any],
                 batch_size: int, device: torch.device, workers: int = 0,
                 best_threshold: Path | None = None) -> None:
        self.fit_images, self.validation = fit_images, validation
        self.best_threshold = best_threshold
        self.select_by = SelectBy(select_by)
        self.best_path, self.run_config = best_path, run_config
        self.batch_size, self.device, self.workers = batch_size, device, workers

    def score(self, model: AnomalyModel, epoch: int, step: int,
              history: list[dict[str, Any]]) -> dict[str, Any]:
        """Fit a copy of ``model``, score it, and write it to ``best.pt`` if it is the best.

        ``model`` itself and every random generator are left as they were.

        Args:
            model: the model after ``epoch`` epochs (its state is not changed).
            epoch: finished epochs.
            step: optimizer steps taken.
            history: the records of the epochs before, with their validation metrics.

        Returns:
            The validation record: ``pixel_auroc``, ``aupro_0.3``, ``image_auroc``,
            ``seconds`` and ``best`` (whether this epoch is the best so far).

        Raises:
            NonFiniteLossError: the fitted model's maps are not finite.
        """
        started = time.perf_counter()
        states = capture_rng_states()  # the loaders draw their base seeds from torch's
        try:
            scorer = copy.deepcopy(model)
            fit_on(scorer, self.fit_images, self.batch_size, self.device, self.workers)
            evaluation = predict_dataset(scorer, self.validation, self.batch_size, self.device,
                                         self.workers)
        finally:
            restore_rng_states(states)
        maps, masks = evaluation.maps, evaluation.masks
        if not (torch.isfinite(maps).all() and torch.isfinite(evaluation.scores).all()):
            raise NonFiniteLossError(
                f"the validation anomaly maps after epoch {epoch} are not finite: the model "
                f"diverged; {self.best_path.parent / 'last.pt'} keeps epoch {epoch}: start "
                "again with a lower --lr and --overwrite"
            )
        record: dict[str, Any] = {
            SelectBy.PIXEL_AUROC.value: pixel_auroc(maps, masks),
            SelectBy.AUPRO.value: aupro(maps, masks, DEFAULT_FPR_LIMIT),
            "image_auroc": image_auroc(evaluation.scores, evaluation.labels),
        }
        best = best_record([*history, {"epoch": epoch, VALIDATION_KEY: record}],
                           self.select_by)
        record["best"] = best is not None and best["epoch"] == epoch
        if record["best"]:
            if self.best_threshold is not None:  # stale first: a crash leaves none
                self.best_threshold.unlink(missing_ok=True)
            save_checkpoint(self.best_path, scorer, None, epoch, step, self.run_config)
        record["seconds"] = round(time.perf_counter() - started, 3)
        return record
