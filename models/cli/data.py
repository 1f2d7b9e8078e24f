"""``flowkit data synth``: write the built-in synthetic defect dataset in the MVTec-AD
layout."""

from __future__ import annotations

import argparse

from ..data import SYNTHETIC_CATEGORIES, SyntheticConfig, write_synthetic
from ..engine.signals import StopSignals
from ..errors import ConfigError
from .common import add_common_flags, non_negative_int, positive_int

__all__ = ["DESCRIPTION", "add_arguments", "run"]

DESCRIPTION = "Datasets: `flowkit data synth` renders the synthetic defect dataset to disk."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs of ``flowkit data`` and their flags."""
    jobs = parser.add_subparsers(dest="data_command", metavar="JOB", required=True)
    synth = jobs.add_parser(
        "synth", help="write the synthetic dataset (MVTec-AD layout)",
        description="Render the built-in synthetic defect dataset to DIR/<category>/...",
    )
    add_common_flags(synth)
    defaults = SyntheticConfig()
    synth.add_argument("--out", metavar="DIR", required=True, help="the dataset root")
    synth.add_argument("--categories", nargs="+", choices=SYNTHETIC_CATEGORIES,
                       default=list(SYNTHETIC_CATEGORIES), metavar="NAME",
                       help=f"of {', '.join(SYNTHETIC_CATEGORIES)} (default: all)")
    synth.add_argument("--image-size", type=positive_int, default=defaults.image_size)
    synth.add_argument("--seed", type=int, default=defaults.seed)
    synth.add_argument("--num-train", type=non_negative_int, default=defaults.num_train)
    synth.add_argument("--num-test-good", type=non_negative_int,
                       default=defaults.num_test_good)
    synth.add_argument("--num-test-per-defect", type=non_negative_int,
                       default=defaults.num_test_per_defect)


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit data synth``."""
    try:
        root = write_synthetic(args.out, args.categories, args.image_size, args.num_train,
                               args.num_test_good, args.num_test_per_defect, args.seed)
    except ValueError as error:
        raise ConfigError(f"{error}; change the flags") from error
    if not args.quiet:
        print(f"wrote {', '.join(args.categories)} to {root} (MVTec-AD layout)")
    return 0
