"""``flowkit summary OUT``: mean ± std of every metric over the seed runs ``OUT/seed-S`` (written
by ``flowkit train --seeds``, or seed by seed with ``--seed S --out OUT/seed-S``, e.g. under
``torchrun``); writes ``OUT/summary.json`` and prints the table."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..engine.run_folder import RunFolder
from ..engine.seeds import (
    SUMMARY_NAME,
    check_distinct,
    check_same_settings,
    job_seeds,
    seed_folder,
    summarize,
)
from ..engine.signals import StopSignals
from ..errors import RunFolderError
from .command_line import train_command
from .common import add_common_flags, non_negative_int, single_process

__all__ = ["DESCRIPTION", "add_arguments", "print_summary", "run", "write_summary"]

DESCRIPTION = (
    f"Mean and sample standard deviation of every metric over the seed runs OUT/seed-S; "
    f"writes OUT/{SUMMARY_NAME} and prints the table."
)

_DIGITS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flowkit summary``."""
    add_common_flags(parser)
    parser.add_argument("out", metavar="OUT",
                        help="the --out folder of `flowkit train --seeds`, holding seed-S runs")
    parser.add_argument("--seeds", type=non_negative_int, nargs="+", metavar="S",
                        help="the seeds to summarize (default: every seed-S folder in OUT)")


def _cell(entry: dict[str, Any]) -> str:
    """``mean ± std``, or the mean alone for one seed."""
    if entry["std"] is None:
        return f"{entry['mean']:.{_DIGITS}f}"
    return f"{entry['mean']:.{_DIGITS}f} ± {entry['std']:.{_DIGITS}f}"


def print_summary(title: str, summary: dict[str, Any]) -> None:
    """Print ``metric | mean ± std | n seeds`` as an aligned table on stdout."""
    rows = [(key, _cell(entry), str(entry["n"])) for key, entry in summary["metrics"].items()]
    header = ("metric", "mean ± std", "seeds")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print(title)
    for row in (header, tuple("-" * width for width in widths), *rows):
        print("| " + " | ".join(cell.ljust(width) if i == 0 else cell.rjust(width)
                                for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
              + " |")
    if summary["n"] == 1:
        print("(one seed: no standard deviation; give more seeds for one)")
    else:
        print(f"(std: the sample standard deviation over the {summary['n']} seeds, ddof=1)")


def write_summary(out: str | Path, seeds: Sequence[int]) -> dict[str, Any]:
    """Summarize the seeds' runs in ``out`` into ``out/summary.json``, each with the command
    that trains it alone (from its ``config.json``).

    Raises:
        RunFolderError: a seed folder that is no run, or a missing or mismatched
            ``metrics.json`` (see :func:`~flowkit.models.engine.seeds.summarize`).
        ConfigError: runs that differ in a setting other than the seed.
    """
    configs = {seed: RunFolder.open(seed_folder(out, seed)).read_config()
               for seed in check_distinct(seeds)}
    check_same_settings(configs)
    commands = {seed: train_command(config, seed_folder(out, seed))
                for seed, config in configs.items()}
    return summarize(out, seeds, commands)


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit summary OUT``."""
    single_process("summary")
    seeds = args.seeds if args.seeds is not None else job_seeds(args.out)
    if not seeds:
        raise RunFolderError(f"{args.out} holds no seed-S run folder; pass the --out folder of "
                             "`flowkit train --seeds`")
    summary = write_summary(args.out, seeds)
    print_summary(f"{len(seeds)} seeds in {args.out} ({Path(args.out) / SUMMARY_NAME})", summary)
    return 0
