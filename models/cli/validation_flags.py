"""``flowkit train --val-fraction F --select-by METRIC``: the validation split that chooses the
best epoch without the test set (see :mod:`flowkit.models.engine.validation`)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ..base import MODELS
from ..data import DatasetError, Split
from ..engine.config import RunConfig
from ..engine.validation import (
    DEFAULT_VAL_FRACTION,
    MAX_VALIDATIONS,
    SelectBy,
    default_val_every,
    split_training,
)
from ..errors import ConfigError
from .common import first, positive_int

__all__ = ["add_validation_flags", "fraction", "with_validation"]


def fraction(text: str) -> float:
    """An argparse type: a float in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def add_validation_flags(group: argparse.ArgumentParser | Any) -> None:
    """``--val-fraction``, ``--select-by`` and ``--val-every``."""
    group.add_argument("--val-fraction", type=fraction, metavar="F",
                       help="hold out this fraction of the training images (at least 4; chosen "
                       "by the data, not --seed), paste synthetic defects on them, score every "
                       "epoch and keep the best as checkpoints/best.pt; 0: no validation "
                       f"(default: {DEFAULT_VAL_FRACTION} for models that train, 0 when the "
                       "training set is too small to spare 4 images and a batch)")
    group.add_argument("--select-by", choices=[s.value for s in SelectBy],
                       help="the validation metric the best epoch maximizes; ties go to the "
                       f"earlier epoch (default: {SelectBy.AUPRO.value})")
    group.add_argument("--val-every", type=positive_int, metavar="K",
                       help="score the validation split every K epochs and after the last "
                       f"(default: at most {MAX_VALIDATIONS} per run, ceil(epochs / "
                       f"{MAX_VALIDATIONS}): every epoch up to {MAX_VALIDATIONS} epochs)")


def _default_fits(config: RunConfig) -> bool:
    """Whether the default fraction leaves a batch to train on (``True`` when the training
    images cannot be listed: the checks before training report that)."""
    try:
        count = len(config.data.dataset(Split.TRAIN.value))
        split_training(count, DEFAULT_VAL_FRACTION, config.batch_size)
    except DatasetError:
        return True
    except ConfigError:
        return False
    return True


def with_validation(args: argparse.Namespace, base: RunConfig | None,
                    config: RunConfig) -> RunConfig:
    """``config`` with ``val_fraction``, ``select_by`` and ``val_every`` from the flags, else
    the resumed run, else the defaults: :data:`DEFAULT_VAL_FRACTION` for a model that trains on
    a training set that can spare it, else no validation; :func:`default_val_every` of the
    epochs.

    Raises:
        ConfigError: ``--val-fraction`` above 0 for a model fitted without training.
    """
    given = getattr(args, "val_fraction", None)
    select_by = first(getattr(args, "select_by", None), base and base.select_by,
                      SelectBy.AUPRO.value)
    cls = MODELS[config.model]
    if not cls.needs_training:
        if given:
            raise ConfigError(f"the model {cls.name!r} is fitted without gradient steps: there "
                              "is no epoch to choose; drop --val-fraction")
        val_fraction = 0.0
    elif given is not None or base is not None:
        val_fraction = first(given, base and base.val_fraction)
    else:
        val_fraction = DEFAULT_VAL_FRACTION if _default_fits(config) else 0.0
    val_every = first(getattr(args, "val_every", None), base and base.val_every,
                      default_val_every(config.epochs))
    return dataclasses.replace(config, val_fraction=val_fraction, select_by=select_by,
                               val_every=val_every)
