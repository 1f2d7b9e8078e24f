"""``flowkit data synth``: write the built-in synthetic defect dataset in the MVTec-AD
layout."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..data import SYNTHETIC_CATEGORIES, SyntheticConfig, write_synthetic
from ..engine.files import atomic_folder, write_json
from ..engine.signals import StopSignals
from ..errors import ConfigError
from .common import add_common_flags, check_replaceable, non_negative_int, positive_int

__all__ = ["DESCRIPTION", "MARKER_FILE", "add_arguments", "run"]

DESCRIPTION = "Datasets: `flowkit data synth` renders the synthetic defect dataset to disk."

MARKER_FILE = "synthetic.json"
"""Written at the dataset root: the settings it was rendered with (``--overwrite`` replaces
only such a folder, an empty one, or one of synthetic category folders)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The jobs of ``flowkit data`` and their flags."""
    jobs = parser.add_subparsers(dest="data_command", metavar="JOB", required=True)
    synth = jobs.add_parser(
        "synth", help="write the synthetic dataset (MVTec-AD layout)",
        description="Render the built-in synthetic defect dataset to DIR/<category>/...; "
        "an existing DIR is replaced whole with --overwrite, never mixed with new images.",
    )
    add_common_flags(synth)
    defaults = SyntheticConfig()
    synth.add_argument("--out", metavar="DIR", required=True, help="the dataset root")
    synth.add_argument("--overwrite", action="store_true",
                       help="replace DIR, a dataset this command wrote earlier")
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


def _is_synthetic(folder: Path) -> bool:
    """Whether ``folder`` holds a synthetic dataset (nothing else)."""
    entries = [entry.name for entry in folder.iterdir()]
    return (folder / MARKER_FILE).is_file() or set(entries) <= set(SYNTHETIC_CATEGORIES)


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit data synth``: the dataset is rendered into a temporary folder, which then
    replaces ``--out`` whole (an interrupted or failed run leaves ``--out`` as it was)."""
    out = Path(args.out)
    try:
        config = SyntheticConfig(args.image_size, args.num_train, args.num_test_good,
                                 args.num_test_per_defect, args.seed)
    except ValueError as error:
        raise ConfigError(f"{error}; change the flags") from error
    check_replaceable(out, args.overwrite, _is_synthetic,
                      f"a dataset of flowkit data synth (no {MARKER_FILE})")
    with atomic_folder(out) as temporary:
        write_synthetic(temporary, args.categories, **asdict(config))
        write_json(temporary / MARKER_FILE, {"categories": args.categories, **asdict(config)})
    if not args.quiet:
        print(f"wrote {', '.join(args.categories)} to {out} (MVTec-AD layout)")
    return 0
