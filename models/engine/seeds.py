"""Several seeds of one run: the job folder ``OUT/seed-S/``, and the summary of their metrics
(per-seed values, mean, sample standard deviation) in ``OUT/summary.json``.

A multi-seed job folder holds one ordinary run folder per seed and the summary::

    OUT/
        seed-0/  seed-1/  ...  one run folder each (see :mod:`.run_folder`)
        summary.json           every numeric metric of the seeds' metrics.json: values,
                               mean, std (ddof=1; null for one seed) and n

The summary walks the nested sections of ``metrics.json`` (a section ``{"best": {"pixel_auroc":
...}}`` gives the metric ``best/pixel_auroc``) and keeps every number (``bool`` is no number;
strings and lists are not summarized). A metric missing from some seeds' ``metrics.json``
is an error, never a mean over fewer seeds: the table would compare numbers over different
seeds without saying so.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError, RunFolderError
from .config import RunConfig
from .files import TEMPORARY_GLOB, read_json, write_json
from .run_folder import RunFolder, RunMode

__all__ = [
    "SEED_FOLDER_PREFIX",
    "SEPARATOR",
    "STD_NOTE",
    "SUMMARY_NAME",
    "check_distinct",
    "check_job_folder",
    "check_same_settings",
    "flatten_numbers",
    "is_finished",
    "job_seeds",
    "mean_std",
    "metric_statistics",
    "prepare_job_folder",
    "seed_folder",
    "seed_run_mode",
    "summarize",
]

SEED_FOLDER_PREFIX = "seed-"
SUMMARY_NAME = "summary.json"
SEPARATOR = "/"
"""Joins the keys of nested sections (``best/aupro_0.3``: keys may hold dots)."""
STD_NOTE = "sample standard deviation over the seeds (ddof=1); null for a single seed"
_SEED_FOLDER = re.compile(rf"^{SEED_FOLDER_PREFIX}(\d+)$")


def seed_folder(out: str | Path, seed: int) -> Path:
    """The run folder of ``seed`` in the job folder ``out``: ``out/seed-S``."""
    return Path(out) / f"{SEED_FOLDER_PREFIX}{seed}"


def check_distinct(seeds: Sequence[int]) -> list[int]:
    """The seeds, each once.

    Raises:
        ConfigError: no seed, or a seed given more than once (two runs would be the same).
    """
    if not seeds:
        raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0 1 2")
    repeated = sorted({seed for seed in seeds if list(seeds).count(seed) > 1})
    if repeated:
        raise ConfigError(f"--seeds lists {', '.join(map(str, repeated))} more than once; "
                          "each seed is one run: give each once")
    return list(seeds)


def job_seeds(out: str | Path) -> list[int]:
    """The seeds whose folders ``out`` holds, sorted."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = (_SEED_FOLDER.match(entry.name) for entry in out.iterdir() if entry.is_dir())
    return sorted(int(match.group(1)) for match in found if match)


def _is_ours(entry: Path) -> bool:
    """Whether ``entry`` of a job folder is what a job writes there."""
    return (entry.name == SUMMARY_NAME or entry.match(TEMPORARY_GLOB)
            or (entry.is_dir() and _SEED_FOLDER.match(entry.name) is not None))


def check_job_folder(out: str | Path, mode: RunMode | str) -> None:
    """Check, without touching anything, that ``out`` may hold a multi-seed job in ``mode``.

    Args:
        out: the job folder.
        mode: ``new`` (it must not exist), ``resume`` (it must hold a seed's run) or
            ``overwrite`` (it must be a job folder, an empty folder, or absent; each seed
            folder in it a run folder or empty).

    Raises:
        RunFolderError: the folder may not be used so; the message says what to pass.
    """
    out, mode = Path(out), RunMode(mode)
    entries = list(out.iterdir()) if out.is_dir() else []
    ours = out.is_dir() and all(_is_ours(entry) for entry in entries)
    alien = ("it holds a single run (config.json), not seed-S folders"
             if (out / "config.json").is_file() else "it is not a multi-seed job folder")
    if mode is RunMode.NEW and out.exists():
        advice = ("it is empty: pass --overwrite to use it" if ours and not entries else
                  "pass --resume to continue the job, --overwrite to replace it, or choose "
                  "another --out" if ours else f"{alien}: choose another --out")
        raise RunFolderError(f"the job folder {out} exists; {advice}")
    if mode is RunMode.RESUME and not job_seeds(out):
        advice = ("drop --resume to start the job" if not out.exists() else
                  f"{alien}: choose another --out" if not ours else
                  "pass --overwrite instead of --resume to start the job in it")
        raise RunFolderError(f"nothing to resume: {out} holds no seed-S run; {advice}")
    if mode is not RunMode.NEW and out.exists():
        if not ours:
            raise RunFolderError(f"refusing to use {out}: {alien}; choose another --out")
        if mode is RunMode.OVERWRITE:
            for seed in job_seeds(out):
                RunFolder.check(seed_folder(out, seed), RunMode.OVERWRITE)


def prepare_job_folder(out: str | Path, mode: RunMode | str) -> None:
    """:func:`check_job_folder`, then create ``out``: ``overwrite`` deletes the whole job
    first (every seed, also those not asked for now); ``resume`` removes stale temporary
    files."""
    out, mode = Path(out), RunMode(mode)
    check_job_folder(out, mode)
    if mode is RunMode.OVERWRITE and out.exists():
        shutil.rmtree(out)
    for stale in out.glob(TEMPORARY_GLOB):
        stale.unlink()
    out.mkdir(parents=True, exist_ok=True)


def seed_run_mode(folder: str | Path, job: RunMode | str) -> RunMode:
    """How a seed's run folder is used in a job of mode ``job``: a resumed job continues the
    seeds that have a run and starts the others."""
    folder, job = Path(folder), RunMode(job)
    if job is not RunMode.RESUME:
        return job
    if RunFolder(folder).config.is_file():
        return RunMode.RESUME
    return RunMode.OVERWRITE if folder.exists() else RunMode.NEW  # empty: checked as such


def is_finished(run: RunFolder, config: RunConfig) -> bool:
    """Whether ``run`` finished with ``config``: its ``metrics.json`` exists, was written with
    as many epochs as ``config`` asks, and no later checkpoint (an extension that was
    stopped) has made it stale."""
    if not (run.metrics.is_file() and run.final_checkpoint.is_file()):
        return False
    if run.read_config().epochs != config.epochs:
        return False
    written = run.metrics.stat().st_mtime_ns
    return all(not checkpoint.is_file() or checkpoint.stat().st_mtime_ns <= written
               for checkpoint in (run.last_checkpoint, run.final_checkpoint))


def check_same_settings(configs: Mapping[int, RunConfig]) -> None:
    """Refuse seeds whose runs differ in anything but the seed.

    Raises:
        ConfigError: naming the seeds and the first setting that differs.
    """
    items = list(configs.items())
    if not items:
        return
    first_seed, first = items[0]
    reference = dataclasses.replace(first, seed=0).to_json()
    for seed, config in items[1:]:
        other = dataclasses.replace(config, seed=0).to_json()
        differing = sorted(key for key in reference.keys() | other.keys()
                           if reference.get(key) != other.get(key))
        if differing:
            epochs_only = differing == ["epochs"]
            advice = (f"pass --epochs {max(first.epochs, config.epochs)} to train every seed "
                      "as long" if epochs_only else
                      "a job's seeds share every other setting: start anew with --overwrite")
            raise ConfigError(
                f"seeds {first_seed} and {seed} differ in {', '.join(differing)} "
                f"({reference[differing[0]]!r} vs {other[differing[0]]!r}); {advice}"
            )


def flatten_numbers(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a nested record, keyed by its path (keys joined by :data:`SEPARATOR`).

    Args:
        record: a JSON object (``metrics.json``).
        prefix: prepended to the keys (used for the nested sections).

    Returns:
        ``{path: value}`` for every ``int`` or ``float`` (not ``bool``) in ``record`` and its
        nested dicts; strings, lists and ``None`` are left out.

    Raises:
        ValueError: a key holding the separator or a non-finite number.

    Example:
        >>> flatten_numbers({"auroc": 0.9, "best": {"auroc": 0.95, "epoch": 3}, "date": "x"})
        {'auroc': 0.9, 'best/auroc': 0.95, 'best/epoch': 3.0}
    """
    numbers: dict[str, float] = {}
    for key, value in record.items():
        if SEPARATOR in key:
            raise ValueError(f"the metric key {prefix}{key!r} holds {SEPARATOR!r}, which joins "
                             "nested keys in the summary; rename it")
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            numbers.update(flatten_numbers(value, path + SEPARATOR))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"the metric {path} is {value}: no mean or std of it means "
                                 "anything; find out why that run's metric is not finite")
            numbers[path] = float(value)
    return numbers


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (``None`` for one value), in float64 with
    a two-pass sum (no cancellation for values far from zero)."""
    mean = math.fsum(values) / len(values)
    if len(values) == 1:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def metric_statistics(records: Mapping[int, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± std of every numeric metric over seeds.

    Args:
        records: each seed's ``metrics.json``, by seed (at least one).

    Returns:
        ``{metric: {"values": {seed: value}, "mean": m, "std": s or None, "n": n}}`` for every
        number of the records (see :func:`flatten_numbers`), in the first record's order;
        ``std`` is the sample standard deviation (ddof=1), ``None`` for one seed.

    Raises:
        ValueError: no record, a metric missing from some seeds (the message names them), or
            a non-finite value.
    """
    if not records:
        raise ValueError("no seed to summarize")
    flat = {seed: flatten_numbers(record) for seed, record in records.items()}
    keys = list(dict.fromkeys(key for numbers in flat.values() for key in numbers))
    statistics = {}
    for key in keys:
        missing = [seed for seed, numbers in flat.items() if key not in numbers]
        if missing:
            having = [seed for seed in flat if seed not in missing]
            raise ValueError(
                f"the metric {key} is in the metrics.json of seeds "
                f"{', '.join(map(str, having))} but not of seeds {', '.join(map(str, missing))}; "
                "their runs were evaluated differently: evaluate them again with the same "
                "flowkit (flowkit eval seed-S), or train them again"
            )
        values = {seed: flat[seed][key] for seed in flat}
        mean, std = mean_std(list(values.values()))
        statistics[key] = {"values": values, "mean": mean, "std": std, "n": len(values)}
    return statistics


def summarize(out: str | Path, seeds: Sequence[int],
              commands: Mapping[int, str] | None = None) -> dict[str, Any]:
    """Read the seeds' ``metrics.json`` in ``out`` and write ``out/summary.json`` atomically.

    Args:
        out: the job folder.
        seeds: the seeds to summarize (their folders must hold ``metrics.json``).
        commands: for each seed, the command that trains it alone (recorded as given).

    Returns:
        The summary written: ``seeds``, ``n``, ``std`` (what it is), ``runs`` (per seed: the
        folder, and the command if given) and ``metrics`` (see :func:`metric_statistics`,
        with the seeds as strings, as JSON keys are).

    Raises:
        RunFolderError: a seed's ``metrics.json`` is missing or unreadable, or the seeds'
            metrics do not match (see :func:`metric_statistics`).
    """
    out = Path(out)
    seeds = check_distinct(seeds)
    records = {seed: read_json(RunFolder(seed_folder(out, seed)).metrics) for seed in seeds}
    try:
        statistics = metric_statistics(records)
    except ValueError as error:
        raise RunFolderError(f"cannot summarize the seeds in {out}: {error}") from error
    for entry in statistics.values():
        entry["values"] = {str(seed): value for seed, value in entry["values"].items()}
    runs = {str(seed): {"folder": seed_folder(out, seed).name,
                        **({"command": commands[seed]} if commands else {})} for seed in seeds}
    summary = {"seeds": seeds, "n": len(seeds), "std": STD_NOTE, "runs": runs,
               "metrics": statistics}
    write_json(out / SUMMARY_NAME, summary)
    return summary
