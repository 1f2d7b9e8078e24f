"""What the subcommands share: argument types, the flags every command takes, the device and
the execution options."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.distributed import Distributed, world_size_from_environment
from ..engine.signals import StopSignals
from ..engine.training import TrainOptions
from ..errors import ConfigError

__all__ = [
    "AUTO",
    "MODEL_MODULES_VARIABLE",
    "add_common_flags",
    "add_inference_flags",
    "add_run_flags",
    "check_replaceable",
    "device_of",
    "first",
    "import_model_modules",
    "non_negative_int",
    "options_of",
    "positive_float",
    "positive_int",
    "single_process",
]

AUTO = "auto"
MODEL_MODULES_VARIABLE = "FLOWKIT_MODEL_MODULES"
"""Modules (comma-separated) imported before a command runs, so that their models register."""


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def first(*values: Any) -> Any:
    """The first value that is not ``None``."""
    return next((v for v in values if v is not None), None)


def import_model_modules() -> None:
    """Import the modules named in :data:`MODEL_MODULES_VARIABLE` so their models register.

    Raises:
        ConfigError: a module that cannot be imported.
    """
    for name in filter(None, os.environ.get(MODEL_MODULES_VARIABLE, "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as error:
            raise ConfigError(
                f"cannot import the model module {name!r} listed in {MODEL_MODULES_VARIABLE} "
                f"({error}); fix or unset the variable"
            ) from error


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--debug``, which every command takes."""
    parser.add_argument("--quiet", action="store_true", help="print only results and errors")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def add_run_flags(parser: argparse.ArgumentParser | Any) -> None:
    """``--device`` and ``--workers``: where and how fast, never what."""
    parser.add_argument("--device", choices=(AUTO, "cpu", "cuda"), default=AUTO,
                        help="auto: cuda when available (default: %(default)s)")
    parser.add_argument("--workers", type=non_negative_int, default=0,
                        help="data-loading processes (default: %(default)s)")


def add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` (it never changes the maps) and the run flags, for eval and predict."""
    parser.add_argument("--batch-size", type=positive_int,
                        help="images per batch (default: the run's)")
    add_run_flags(parser)


def device_of(name: str) -> torch.device:
    """The device of ``--device``.

    Raises:
        ConfigError: ``cuda`` without a CUDA device.
    """
    if name == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def options_of(args: argparse.Namespace, device: torch.device | None = None,
               distributed: Distributed | None = None,
               stop: StopSignals | None = None) -> TrainOptions:
    """Device, workers, progress bars (on a terminal, rank 0, unless ``--quiet``), processes
    and signal handlers."""
    distributed = distributed or Distributed()
    return TrainOptions(
        device=device or device_of(args.device), workers=args.workers,
        progress=distributed.is_main and not args.quiet and sys.stderr.isatty(),
        quiet=args.quiet or not distributed.is_main, distributed=distributed, stop=stop,
    )


def check_replaceable(out: Path, overwrite: bool, holds_ours: Callable[[Path], bool],
                      what: str) -> None:
    """Refuse an existing output folder without ``--overwrite``, and never replace one that
    holds anything but ``what`` (an empty folder may be replaced).

    Args:
        out: the ``--out`` folder.
        overwrite: whether ``--overwrite`` was given.
        holds_ours: whether a non-empty folder holds what this command writes.
        what: what this command writes, for the message.

    Raises:
        ConfigError: the folder may not be replaced.
    """
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(f"the folder {out} exists; pass --overwrite to replace it whole, or "
                          "choose another --out")
    if not out.is_dir() or (any(out.iterdir()) and not holds_ours(out)):
        raise ConfigError(f"refusing to replace {out}: it does not hold {what}; choose another "
                          "--out")


def single_process(command: str) -> None:
    """Refuse to run ``command`` under torchrun (it would run once per process).

    Raises:
        ConfigError: ``WORLD_SIZE`` is above 1.
    """
    if world_size_from_environment() > 1:
        raise ConfigError(f"flowkit {command} runs in one process: start it with python or "
                          "flowkit, not torchrun")
