"""``flowkit train``: train a registered model (on one process, or several under ``torchrun``),
fit it, and evaluate the final model on the test split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..base import MODELS
from ..engine.config import DataSource, RunConfig
from ..engine.distributed import distributed_session
from ..engine.memory import memory_advice
from ..engine.preflight import preflight
from ..engine.resume import resume_point
from ..engine.run_folder import RunFolder, RunMode
from ..engine.signals import StopSignals
from ..engine.training import train
from ..errors import Interrupted
from .common import (
    add_common_flags,
    add_run_flags,
    device_of,
    non_negative_int,
    options_of,
    positive_float,
    positive_int,
)
from .model_flags import add_model_flags
from .results import evaluate_run, print_best, print_results
from .settings import (
    DEFAULT_MODEL,
    DEFAULT_RUNS_DIR,
    DEFAULT_SEED,
    DEFAULT_SYNTHETIC_CATEGORY,
    default_out,
    model_class,
    resolve_config,
    takes,
)
from .validation_flags import add_validation_flags

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = (
    "Train a model on normal images, fit it, and evaluate the final model on the test split. "
    "Unset flags come from --preset, else the model's defaults for the category (or, with "
    "--resume, from the run)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flowkit train``."""
    add_common_flags(parser)
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=[s.value for s in DataSource],
                      help="dataset layout (default: synthetic)")
    data.add_argument("--data-root", metavar="DIR", help="dataset folder (not for synthetic)")
    data.add_argument("--category", metavar="NAME",
                      help=f"category (default for synthetic: {DEFAULT_SYNTHETIC_CATEGORY})")
    data.add_argument("--image-size", type=positive_int, metavar="PX",
                      help="images are resized to PX x PX (default: the model's)")
    training = parser.add_argument_group("training")
    training.add_argument("--model", choices=sorted(MODELS),
                          help=f"registered model (default: {DEFAULT_MODEL})")
    training.add_argument("--epochs", type=non_negative_int, help="default: the model's")
    training.add_argument("--batch-size", type=positive_int,
                          help="the global batch: under torchrun each of N processes takes "
                          "1/N of it (default: the model's)")
    training.add_argument("--seed", type=int, help=f"default: {DEFAULT_SEED}")
    training.add_argument("--lr", type=positive_float, help="Adam's learning rate")
    training.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"))
    training.add_argument("--eps", type=positive_float)
    training.add_argument("--weight-decay", type=float)
    training.add_argument("--clip-grad-norm", type=float, metavar="NORM",
                          help="gradient-norm clip; 0 disables it")
    add_validation_flags(training)
    add_run_flags(training)
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="RUN_DIR",
                        help=f"run folder (default: {DEFAULT_RUNS_DIR}/<model>-<category>)")
    mode = output.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    parser.add_argument("--preset", metavar="NAME",
                        help="a named group of settings of the model (flags given win)")
    add_model_flags(parser)


def _training_advice(config: RunConfig) -> str:
    """What to do when training runs out of memory."""
    memory_saving = ", --memory-saving" if takes(model_class(config.model), "memory_saving") \
        else ""
    return (f"lower --batch-size (now {config.batch_size}){memory_saving} or a smaller "
            f"--image-size (now {config.data.image_size}), in a new run")


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit train``: every process checks everything before rank 0 touches the run
    folder; a new run that fails before its first checkpoint leaves nothing behind."""
    out = Path(args.out) if args.out else default_out(args)
    mode = RunMode.RESUME if args.resume else RunMode.OVERWRITE if args.overwrite \
        else RunMode.NEW
    with distributed_session(device_of(args.device)) as (distributed, device):
        # Every check first: nothing is written or deleted until they pass.
        existing = RunFolder.check(out, mode)
        # Resuming: the run's own settings, the flags checked against them.
        config = resolve_config(args, existing.read_config() if mode is RunMode.RESUME else None)
        report = preflight(config, distributed.world_size)
        start = resume_point(config, existing, device) \
            if mode is RunMode.RESUME and existing.last_checkpoint.is_file() else None
        note = report.resize_note(config.data.image_size)
        if note and distributed.is_main and not args.quiet:
            print(note, file=sys.stderr)
        distributed.barrier()
        folder = RunFolder.prepare(out, mode) if distributed.is_main else existing
        distributed.barrier()
        options = options_of(args, device, distributed, stop)
        try:
            with memory_advice("training", _training_advice(config)):
                model = train(config, folder, options, resume=mode is RunMode.RESUME,
                              start=start)
        except BaseException:
            if mode is RunMode.NEW and distributed.is_main:
                folder.discard_if_untrained()
            raise
    if model is None:  # not rank 0: it reports
        return 0
    try:
        record = evaluate_run(model, config, folder, options, config.batch_size)
    except Interrupted as error:
        raise Interrupted(error.signal_number, f"{error} while evaluating; the final model "
                          f"is saved: evaluate it with flowkit eval {folder.root}") from None
    print_results(f"{config.model} on {config.data.name}, final model after {config.epochs} "
                  f"epochs: {folder.root}", record)
    print_best(config, record)
    return 0
