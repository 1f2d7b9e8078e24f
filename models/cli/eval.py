"""``flowkit eval RUN``: recompute a run's metrics from its final checkpoint (and its
best-on-validation checkpoint, if it has one)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..engine.checkpoint import load_model
from ..engine.run_folder import RunFolder
from ..engine.signals import StopSignals
from .common import (
    add_common_flags,
    add_inference_flags,
    options_of,
    single_process,
)
from .results import evaluate_run, print_best, print_results

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = (
    "Evaluate checkpoints/final.pt of a run on its test split, and checkpoints/best.pt (the "
    "best epoch on validation) if the run has one; rewrites metrics.json, the heat maps and "
    "the curves (of the final model)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flowkit eval``."""
    add_common_flags(parser)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder of `flowkit train`")
    parser.add_argument("--data-root", metavar="DIR", help="the dataset, if it has moved")
    add_inference_flags(parser)


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit eval RUN``."""
    single_process("eval")
    folder = RunFolder.open(args.run_dir)
    config = folder.read_config()
    if args.data_root is not None:
        root = str(Path(args.data_root).expanduser().resolve())
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
    options = options_of(args)
    model = load_model(folder.final_checkpoint, options.device, expected_model=config.model,
                       advice=folder.rebuild_advice)
    record = evaluate_run(model, config, folder, options, args.batch_size or config.batch_size)
    print_results(f"{config.model} on {config.data.name}: {folder.final_checkpoint}", record)
    print_best(config, record)
    return 0
