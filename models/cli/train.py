"""``flowkit train``: train a registered model (on one process, or several under ``torchrun``),
fit it, and evaluate the final model on the test split."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from pathlib import Path

import torch

from ..base import MODELS
from ..data import Augmentation
from ..engine.config import DataSource, RunConfig
from ..engine.distributed import distributed_session, world_size_from_environment
from ..engine.memory import memory_advice
from ..engine.preflight import DataReport, preflight
from ..engine.resume import ResumePoint, resume_point
from ..engine.run_folder import RunFolder, RunMode
from ..engine.seeds import (
    SUMMARY_NAME,
    check_distinct,
    check_job_folder,
    check_same_settings,
    is_finished,
    job_seeds,
    prepare_job_folder,
    seed_folder,
    seed_run_mode,
)
from ..engine.signals import StopSignals
from ..engine.training import train
from ..errors import ConfigError, Interrupted
from .command_line import train_command
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
from .summary import print_summary, write_summary
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
    seeding = training.add_mutually_exclusive_group()
    seeding.add_argument("--seed", type=int, help=f"default: {DEFAULT_SEED}")
    seeding.add_argument(
        "--seeds", type=non_negative_int, nargs="+", metavar="S",
        help=f"one run per seed, in turn, in OUT/seed-S (OUT: --out), then OUT/{SUMMARY_NAME} "
        "and a table with the mean ± sample std of every metric; --resume keeps the finished "
        "seeds and continues or starts the others. Not under torchrun: there train each seed "
        "with --seed S --out OUT/seed-S, then run flowkit summary OUT")
    training.add_argument("--lr", type=positive_float, help="Adam's learning rate")
    training.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"))
    training.add_argument("--eps", type=positive_float)
    training.add_argument("--weight-decay", type=float)
    training.add_argument("--clip-grad-norm", type=float, metavar="NORM",
                          help="gradient-norm clip; 0 disables it")
    training.add_argument(
        "--augment", choices=[a.value for a in Augmentation],
        help="flip and turn the training images: auto (default) as the model's rule says "
        "(pyramidflow: MVTec AD's five textures, as the official code; csflow: every "
        "texture); on or off for any category")
    add_validation_flags(training)
    add_run_flags(training)
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="RUN_DIR",
                        help=f"run folder (default: {DEFAULT_RUNS_DIR}/<model>-<category>)")
    mode = output.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run (or the --seeds job) in --out from its last "
                      "checkpoint")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace the run (or the whole --seeds job) in --out")
    parser.add_argument("--preset", metavar="NAME",
                        help="a named group of settings of the model (flags given win)")
    add_model_flags(parser)


def _training_advice(config: RunConfig) -> str:
    """What to do when training runs out of memory."""
    memory_saving = ", --memory-saving" if takes(model_class(config.model), "memory_saving") \
        else ""
    return (f"lower --batch-size (now {config.batch_size}){memory_saving} or a smaller "
            f"--image-size (now {config.data.image_size}), in a new run")


def _run_mode(args: argparse.Namespace) -> RunMode:
    """What ``--resume`` and ``--overwrite`` ask of the folder in ``--out``."""
    return RunMode.RESUME if args.resume else RunMode.OVERWRITE if args.overwrite \
        else RunMode.NEW


def _checked(args: argparse.Namespace, out: Path, mode: RunMode, world_size: int,
             device: torch.device, base: RunConfig | None = None
             ) -> tuple[RunFolder, RunConfig, DataReport, ResumePoint | None]:
    """Every check of a run, nothing written: the folder, the settings (resuming: the run's
    own, the flags checked against them; else over ``base`` if given), the data, ``last.pt``."""
    existing = RunFolder.check(out, mode)
    config = resolve_config(args, existing.read_config() if mode is RunMode.RESUME else base)
    report = preflight(config, world_size)
    start = resume_point(config, existing, device) \
        if mode is RunMode.RESUME and existing.last_checkpoint.is_file() else None
    return existing, config, report, start


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit train``: one run in ``--out``, or one per seed with ``--seeds``."""
    if args.seeds is not None:
        return _train_seeds(args, stop)
    out = Path(args.out) if args.out else default_out(args)
    return _train_one(args, out, _run_mode(args), stop)


def _train_one(args: argparse.Namespace, out: Path, mode: RunMode, stop: StopSignals,
               base: RunConfig | None = None) -> int:
    """One run: every process checks everything before rank 0 touches the run folder; a new
    run that fails before its first checkpoint leaves nothing behind."""
    with distributed_session(device_of(args.device)) as (distributed, device):
        # Every check first: nothing is written or deleted until they pass.
        existing, config, report, start = _checked(args, out, mode, distributed.world_size,
                                                   device, base)
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


def _with_seed(args: argparse.Namespace, seed: int) -> argparse.Namespace:
    """The flags of one seed's run (a copy: settings fill the flags in place)."""
    return argparse.Namespace(**{**vars(args), "seeds": None, "seed": seed})


def _job_stopped(error: Interrupted, out: Path, seeds: list[int], done: list[int],
                 seed: int) -> Interrupted:
    """A stop signal during the seed ``seed`` of a job: which seeds are done, how to go on."""
    if not out.exists():
        return Interrupted(error.signal_number, f"{error}; no seed had a checkpoint yet, "
                           "nothing was kept: run the same command again")
    again = shlex.join(["flowkit", "train", "--out", str(out), "--seeds", *map(str, seeds),
                        "--resume"])
    finished = ", ".join(map(str, done)) or "none"
    stopped = "the summary was not written" if seed in done else f"seed {seed} was stopped"
    return Interrupted(error.signal_number, (
        f"{error}. Seeds {' '.join(map(str, seeds))}: finished {finished}; {stopped}. "
        f"Continue the whole job (finished seeds are kept) with: {again}"
    ))


def _job_settings(out: Path, configs: dict[int, RunConfig]) -> RunConfig | None:
    """The settings a resumed job starts a new seed with: those of a seed it continues, else
    those of any run in ``out`` (the seeds asked for now may all be new); ``None``: no run."""
    if configs:
        return next(iter(configs.values()))
    runs = (RunFolder(seed_folder(out, seed)) for seed in job_seeds(out))
    return next((run.read_config() for run in runs if run.config.is_file()), None)


def _train_seeds(args: argparse.Namespace, stop: StopSignals) -> int:
    """``--seeds``: one run per seed in ``OUT/seed-S``, in turn, then ``OUT/summary.json``.

    Every seed's folder, settings, data and checkpoint are checked before anything is written.
    A resumed job keeps the seeds that finished with the job's settings (their metrics.json is
    read, not recomputed), continues those with a run, and starts the others with the settings
    of the job's runs; all seeds must then share every setting but the seed.

    Raises:
        ConfigError: under torchrun, duplicate seeds, seeds with different settings.
        RunFolderError: ``OUT`` or a seed's folder cannot be used as asked.
        Interrupted: a stop signal; the message names the finished seeds and the command that
            continues the job.
    """
    if world_size_from_environment() > 1:
        raise ConfigError(
            "flowkit train --seeds runs its seeds in one process, not under torchrun; there "
            "train each seed in turn with --seed S --out OUT/seed-S, then write the summary "
            "with: flowkit summary OUT"
        )
    seeds = check_distinct(args.seeds)
    out = Path(args.out) if args.out else default_out(args)
    job = _run_mode(args)
    check_job_folder(out, job)
    device = device_of(args.device)
    modes = {seed: seed_run_mode(seed_folder(out, seed), job) for seed in seeds}
    configs: dict[int, RunConfig] = {}
    bases: dict[int, RunConfig | None] = dict.fromkeys(seeds)
    finished = []
    # The seeds with a run first: a resumed job starts its other seeds with their settings.
    for seed in sorted(seeds, key=lambda s: modes[s] is not RunMode.RESUME):
        if job is RunMode.RESUME and modes[seed] is not RunMode.RESUME:
            settings = _job_settings(out, configs)
            bases[seed] = None if settings is None else dataclasses.replace(settings, seed=seed)
        existing, configs[seed], _, _ = _checked(_with_seed(args, seed), seed_folder(out, seed),
                                                 modes[seed], 1, device, bases[seed])
        if modes[seed] is RunMode.RESUME and is_finished(existing, configs[seed]):
            finished.append(seed)
    check_same_settings({seed: configs[seed] for seed in seeds})

    prepare_job_folder(out, job)
    done = [seed for seed in seeds if seed in finished]
    seed = seeds[0]
    try:
        for number, seed in enumerate(seeds, 1):
            folder = seed_folder(out, seed)
            if not args.quiet:
                state = "finished before: its metrics.json is kept" if seed in finished else \
                    "continued" if modes[seed] is RunMode.RESUME else "started"
                print(f"seed {seed} ({number} of {len(seeds)}, {folder}): {state}",
                      file=sys.stderr)
            if seed not in finished:
                _train_one(_with_seed(args, seed), folder, modes[seed], stop, bases[seed])
                RunFolder(folder).append_log(
                    f"this seed alone: {train_command(configs[seed], folder)}")
                done.append(seed)
        summary = write_summary(out, seeds)
    except BaseException as error:
        if job is RunMode.NEW and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a new job that kept nothing leaves nothing behind
        if isinstance(error, Interrupted):
            raise _job_stopped(error, out, seeds, done, seed) from None
        raise
    config = configs[seeds[0]]
    print_summary(f"{config.model} on {config.data.name}, {len(seeds)} seeds "
                  f"({' '.join(map(str, seeds))}): mean ± std, {out / SUMMARY_NAME}", summary)
    return 0
