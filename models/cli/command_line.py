"""The ``flowkit train`` command that reproduces a run's settings, written out in full."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from ..engine.config import DataSource, RunConfig
from .model_flags import model_config_keys
from .settings import OPTIMIZER_FLAGS, flag, model_class

__all__ = ["train_command"]

_NO_CLIPPING = 0  # what --clip-grad-norm takes for "none"
_WRITTEN_APART = frozenset({"model", "model_config", "data", "epochs", "batch_size", "seed",
                            "optimizer"})


def _words(key: str, value: Any) -> list[str]:
    """A setting as command-line words: ``--memory-saving``, ``--no-memory-saving``,
    ``--levels 2``, ``--betas 0.5 0.9``."""
    if isinstance(value, bool):
        return [flag(key) if value else "--no-" + flag(key)[2:]]
    if isinstance(value, list | tuple):
        return [flag(key), *map(str, value)]
    return [flag(key), str(value)]


def train_command(config: RunConfig, out: str | Path) -> str:
    """``flowkit train ... --out OUT``: every setting of ``config`` as a flag.

    Settings are written out even where they are the model's defaults, so the command trains
    the same run when a later flowkit changes a default. The model's constructor keywords
    that are no flag (see :mod:`.model_flags`) and those set to ``None`` come from the model's
    defaults for the category, as they did for the run.

    Args:
        config: the run's settings.
        out: the run folder the command writes.

    Returns:
        The command, quoted for a POSIX shell.

    Example:
        A seed of a ``flowkit train --seeds`` job: ``flowkit train --model baseline --data
        synthetic --category nut --image-size 256 --seed 1 --out runs/job/seed-1``.
    """
    data = config.data
    words = ["flowkit", "train", "--model", config.model, "--data", data.source]
    if data.root is not None and data.source != DataSource.SYNTHETIC.value:
        words += ["--data-root", data.root]
    if data.category is not None:
        words += ["--category", data.category]
    words += ["--image-size", str(data.image_size)]
    if model_class(config.model).needs_training:
        words += ["--epochs", str(config.epochs)]
    words += ["--batch-size", str(config.batch_size), "--seed", str(config.seed)]
    for field in dataclasses.fields(config):  # the other settings: one flag each, by name
        if field.name not in _WRITTEN_APART:
            words += _words(field.name, getattr(config, field.name))
    for key in OPTIMIZER_FLAGS:
        if key in config.optimizer:
            value = config.optimizer[key]
            words += _words(key, _NO_CLIPPING if value is None else value)
    flags = set(model_config_keys())
    for key, value in config.model_config.items():
        if key in flags and value is not None:
            words += _words(key, value)
    return shlex.join([*words, "--out", str(out)])
