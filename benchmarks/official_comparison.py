"""Our PyramidFlow against the official code over seeds: the table of issue 14's comparison.

    python -m benchmarks.official_comparison --ours OUT [OUT ...] --official JSON [JSON ...] \
        [--official-up-to STEP]

``--ours``: job folders of ``flowkit train --model pyramidflow --seeds S ... --out OUT`` (their
``summary.json``), one per category. ``--official``: the files of
``python -m benchmarks.parity_official --mode official --eval-every K --out JSON``, one per
category and seed. Four rows per category, each the mean ± sample std (ddof=1) over its seeds:

- ours, final model: after the last epoch (``metrics.json``'s top level);
- ours, best on validation: the epoch the held-out training images with pasted defects chose
  (``best/...``); the test set chose nothing (absent for a job trained with
  ``--val-fraction 0``, and then from the mean over categories too);
- official, last epoch: the official model after its last step;
- official, test-selected maximum: each metric's maximum over the test-set evaluations, each
  possibly at another epoch (what the official ``train.py`` reports).

Then the same rows averaged over the categories: each seed's mean over the categories, then the
mean ± std of those over the seeds (the seeds must be the same in every category of a row).
Both sides must have been run at one image size on the same categories. ``--official-up-to
STEP`` keeps only the official evaluations at or before ``STEP`` (its "last epoch" is then the
last of them): the official code at no more optimizer steps than ours took, when our
validation split left fewer training images per epoch. Each job's settings that differ
between such comparisons (``--epochs``, ``--val-fraction``, ``--augment``) are printed above
the table.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flowkit.models.engine.config import SYNTHETIC_DATA_SEED, RunConfig
from flowkit.models.engine.seeds import mean_std

from .common import print_table
from .parity_official import curve_maxima

__all__ = ["METRICS", "ROWS", "comparison", "main", "official_runs", "our_runs"]

METRICS = ("image_auroc", "pixel_auroc", "aupro_0.3")
"""The metrics compared (keys of ``metrics.json``)."""

ROWS = ("ours, final model", "ours, best on validation", "official, last epoch",
        "official, test-selected maximum")
"""The rows of each category, in the order printed."""

OFFICIAL = "official"
"""The side's name in a ``--mode official`` file."""

Runs = dict[str, dict[str, dict[int, dict[str, float]]]]
"""``{category: {row: {seed: {metric: value}}}}``."""


def our_runs(job: str | Path) -> tuple[RunConfig, Runs]:
    """The settings (of its first seed) and the rows of ours of one ``flowkit train --seeds``
    job folder: the final model, and the best on validation unless trained without it.

    Raises:
        ValueError: no ``summary.json`` (the job is unfinished or not a ``--seeds`` job), a
            job of another model or on other data than the synthetic.
    """
    summary_path = Path(job) / "summary.json"
    if not summary_path.is_file():
        raise ValueError(f"{summary_path} is missing: finish the job (flowkit train --seeds ... "
                         f"--out {job} --resume) or summarize it (flowkit summary {job})")
    summary = json.loads(summary_path.read_text())
    first = Path(job) / summary["runs"][str(summary["seeds"][0])]["folder"]
    config = RunConfig.from_json(json.loads((first / "config.json").read_text()))
    if config.model != "pyramidflow":
        raise ValueError(f"{job} is a job of {config.model!r}; the official code is PyramidFlow")
    if config.data.source != "synthetic":
        raise ValueError(f"{job} was trained on --data {config.data.source}; the official runs "
                         "score the synthetic test set: compare a job of --data synthetic")
    metrics = summary["metrics"]
    rows = {row: {seed: {m: metrics[prefix + m]["values"][str(seed)] for m in METRICS}
                  for seed in summary["seeds"]}
            for row, prefix in ((ROWS[0], ""), (ROWS[1], "best/"))
            if prefix + METRICS[0] in metrics}
    return config, {config.data.category: rows}


def official_runs(paths: Sequence[str | Path], up_to: int | None = None) -> tuple[int, Runs]:
    """The image size and the two official rows of ``--mode official`` result files.

    Args:
        paths: the files.
        up_to: only the evaluations at or before this step count (the last of them is the
            "last epoch" row); ``None``: all of them.

    Raises:
        ValueError: a file of another mode, without an evaluation curve or without one at or
            before ``up_to``, of other synthetic images than ``flowkit train``'s, of another
            image size than the rest, or two files of one category and seed.
    """
    runs: Runs = {}
    sizes = set()
    for path in paths:
        record = json.loads(Path(path).read_text())["rows"][0]
        if record.get("mode") != "official" or not record.get("curve"):
            raise ValueError(f"{path} is no --mode official run with --eval-every: rerun it as "
                             "python -m benchmarks.parity_official --mode official --eval-every K")
        if record.get("data_seed") != SYNTHETIC_DATA_SEED:
            raise ValueError(f"{path} scored other synthetic images (--data-seed "
                             f"{record.get('data_seed')}) than flowkit train's (data seed "
                             f"{SYNTHETIC_DATA_SEED}): rerun it without --data-seed")
        curve = [point for point in record["curve"] if up_to is None or point["step"] <= up_to]
        if not curve:
            raise ValueError(f"{path} has no evaluation at or before step {up_to} (the first is "
                             f"at step {record['curve'][0]['step']}): raise --official-up-to")
        sizes.add(record["image_size"])
        rows = runs.setdefault(record["category"], {ROWS[2]: {}, ROWS[3]: {}})
        seed = record["seed"]
        if seed in rows[ROWS[2]]:
            raise ValueError(f"{path}: a second file of {record['category']} seed {seed}")
        maxima = curve_maxima(curve)[OFFICIAL]
        rows[ROWS[2]][seed] = {m: curve[-1]["metrics"][OFFICIAL][m] for m in METRICS}
        rows[ROWS[3]][seed] = {m: maxima[m]["value"] for m in METRICS}
    if len(sizes) > 1:
        raise ValueError(f"the official runs have several image sizes {sorted(sizes)}")
    return sizes.pop() if sizes else 0, runs


def comparison(runs: Runs) -> dict[str, dict[str, dict[str, tuple[float, float | None]]]]:
    """``{category or "mean over categories": {row: {metric: (mean, std)}}}`` over seeds
    (``std`` ``None`` for one seed).

    The ``ours, best on validation`` row may be missing (a job without a validation split);
    the mean over categories has it only if every category has it.

    Raises:
        ValueError: a category without one of the other three rows, or seeds that differ
            between the categories of a row (their mean over categories is then undefined).
    """
    table: dict[str, dict[str, dict[str, tuple[float, float | None]]]] = {}
    for category, rows in sorted(runs.items()):
        missing = [row for row in ROWS if row not in rows and row != ROWS[1]]
        if missing:
            raise ValueError(f"{category} has no {', '.join(missing)}: give both sides' runs")
        table[category] = {row: {m: mean_std([rows[row][s][m] for s in sorted(rows[row])])
                                 for m in METRICS} for row in ROWS if row in rows}
    table["mean over categories"] = {}
    for row in (row for row in ROWS if all(row in rows for rows in runs.values())):
        seed_sets = {category: sorted(rows[row]) for category, rows in runs.items()}
        seeds = next(iter(seed_sets.values()))
        if any(other != seeds for other in seed_sets.values()):
            raise ValueError(f"{row}: the categories have different seeds {seed_sets}")
        table["mean over categories"][row] = {m: mean_std(
            [math.fsum(rows[row][s][m] for rows in runs.values()) / len(runs) for s in seeds])
            for m in METRICS}
    return table


def _settings(config: RunConfig) -> str:
    """The job's settings that vary between comparisons, as ``flowkit train`` flags."""
    return (f"--epochs {config.epochs} --val-fraction {config.val_fraction} "
            f"--augment {config.augment}")


def _read(jobs: Sequence[str], files: Sequence[str], up_to: int | None) -> Runs:
    """Both sides' runs, checked to be of one image size and one job per category; prints
    each job's settings."""
    runs: Runs = {}
    sizes = {}
    for job in jobs:
        config, ours = our_runs(job)
        sizes[job] = config.data.image_size
        print(f"ours, {config.data.category}: {job} ({_settings(config)})")
        for category, rows in ours.items():
            if category in runs:
                raise ValueError(f"two --ours jobs of {category}")
            runs[category] = rows
    official_size, official = official_runs(files, up_to)
    if set(sizes.values()) != {official_size}:
        raise ValueError(f"the runs differ in image size: ours {sizes}, official "
                         f"{official_size}; compare runs at one size")
    for category, rows in official.items():
        runs.setdefault(category, {}).update(rows)
    return runs


def _cell(statistics: tuple[float, float | None]) -> str:
    mean, std = statistics
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The command line: prints the Markdown table and returns it."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ours", nargs="+", required=True, metavar="OUT",
                        help="flowkit train --seeds job folders, one per category")
    parser.add_argument("--official", nargs="+", required=True, metavar="JSON",
                        help="parity_official --mode official --out files")
    parser.add_argument("--official-up-to", type=int, metavar="STEP",
                        help="the official rows from the evaluations at or before this step "
                             "only (e.g. to match our step count)")
    args = parser.parse_args(argv)
    try:
        table = comparison(_read(args.ours, args.official, args.official_up_to))
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    print_table([{"category": category, "row": row,
                  **{metric: _cell(cells[metric]) for metric in METRICS}}
                 for category, rows in table.items() for row, cells in rows.items()],
                ["category", "row", *METRICS])
    mean = table["mean over categories"]
    ours = ROWS[1] if ROWS[1] in mean else ROWS[0]
    print(f"{ours} minus {ROWS[3]}, mean over categories: " + ", ".join(
        f"{m} {mean[ours][m][0] - mean[ROWS[3]][m][0]:+.3f}" for m in METRICS))
    return table


if __name__ == "__main__":
    main()
