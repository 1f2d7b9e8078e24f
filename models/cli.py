"""The ``flowkit`` command line: one entry point, one subcommand per job.

``flowkit train`` trains a registered model (on one process, or several under ``torchrun``)
and evaluates the final one on the test split, ``flowkit eval RUN`` recomputes a run's
metrics from its final checkpoint, ``flowkit predict RUN IMAGES --out DIR`` writes anomaly
maps, overlays and verdicts for new images, and ``flowkit data synth`` writes the synthetic
dataset to disk in the MVTec-AD layout.

Expected failures (a missing dataset folder, an unreadable image, an image size the model
cannot take, a bad checkpoint, an existing run folder, a NaN loss, running out of memory)
print one ``error:`` line naming the problem and the fix, and exit with code 2; a bug exits
with 1. ``--debug`` adds the traceback. SIGINT (Ctrl-C) and SIGTERM stop training after the
current step with a checkpoint to resume from, and exit with 130 and 143. Models from other
packages join the ``--model`` choices when their modules are listed, comma-separated, in the
environment variable ``FLOWKIT_MODEL_MODULES``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from flowkit import __version__

from . import baseline, csflow, pyramidflow  # noqa: F401  (importing them registers the models)
from .base import MODELS, AnomalyModel, build_model
from .checkpoint import load_model
from .data import DEFAULT_IMAGE_SIZE as SYNTHETIC_IMAGE_SIZE
from .data import SYNTHETIC_CATEGORIES, DatasetError, Split, SyntheticConfig, write_synthetic
from .distributed import (
    Distributed,
    distributed_session,
    per_process_batch,
    world_size_from_environment,
)
from .errors import AppError, ConfigError, Interrupted, OutOfMemoryError
from .evaluate import (
    LEGACY_PRO_NOTE,
    METRIC_LABELS,
    compute_metrics,
    predict_dataset,
    write_metrics,
)
from .predict import (
    OutputFormat,
    Prediction,
    Thresholds,
    find_images,
    fit_thresholds,
    predict_images,
    predictions_record,
    read_thresholds,
)
from .run import (
    DataSettings,
    DataSource,
    RunConfig,
    RunFolder,
    RunMode,
    atomic_folder,
    write_json,
)
from .train import StopSignals, TrainOptions, train
from .visualize import save_curves, save_heatmaps

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SYNTHETIC_CATEGORY",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_SIGNAL_BASE",
    "EXIT_UNEXPECTED",
    "MODEL_FLAGS",
    "MODEL_MODULES_VARIABLE",
    "PREDICTIONS_FILE",
    "build_parser",
    "main",
    "resolve_config",
]

DEFAULT_MODEL = "pyramidflow"
DEFAULT_SYNTHETIC_CATEGORY = "brick"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_SEED = 0
SYNTHETIC_EPOCHS = 5
"""The default epochs on the built-in synthetic data (the models' own defaults are the papers')."""
EXIT_ERROR = 2
"""An expected failure the user can fix (also argparse's code for bad arguments)."""
EXIT_UNEXPECTED = 1
EXIT_SIGNAL_BASE = 128
"""Plus the signal number: 130 after SIGINT, 143 after SIGTERM (the shell's convention)."""
EXIT_INTERRUPTED = EXIT_SIGNAL_BASE + 2  # SIGINT before the handlers are in place
MODEL_MODULES_VARIABLE = "FLOWKIT_MODEL_MODULES"
PREDICTIONS_FILE = "predictions.json"

MODEL_FLAGS = (
    "levels", "volume_norm", "channels", "num_stack", "kernel_size", "memory_saving",
    "backbone", "backbone_weights", "hidden", "num_blocks", "last_kernel_size", "map_mode",
)
"""Flags passed to the model's constructor under the same name, when given."""

_AUTO = "auto"
_OPTIMIZER_FLAGS = ("lr", "betas", "eps", "weight_decay", "clip_grad_norm")
_RESUMABLE_CHANGES = frozenset({"epochs"})  # a resumed run may be extended
_EXPECTED_ERRORS = (AppError, DatasetError)
_OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory")  # CUDA, CPU allocator


# ---------------------------------------------------------------- argument types


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {text}")
    return value


def _positive_float(text: str) -> float:
    """An argparse type: a float > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


# ---------------------------------------------------------------- the parser


def _import_model_modules() -> None:
    """Import the modules named in :data:`MODEL_MODULES_VARIABLE` so their models register."""
    for name in filter(None, os.environ.get(MODEL_MODULES_VARIABLE, "").split(",")):
        try:
            importlib.import_module(name.strip())
        except ImportError as error:
            raise ConfigError(
                f"cannot import the model module {name!r} listed in {MODEL_MODULES_VARIABLE} "
                f"({error}); fix or unset the variable"
            ) from error


def _common_flags() -> argparse.ArgumentParser:
    """Flags every subcommand takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="print only results and errors")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return common


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--workers``: where and how fast, never what."""
    parser.add_argument("--device", choices=(_AUTO, "cpu", "cuda"), default=_AUTO,
                        help="auto: cuda when available (default: %(default)s)")
    parser.add_argument("--workers", type=_non_negative_int, default=0,
                        help="data-loading processes (default: %(default)s)")


def _add_inference_flags(parser: argparse.ArgumentParser) -> None:
    """``--batch-size`` (it never changes the maps) and the run flags, for eval and predict."""
    parser.add_argument("--batch-size", type=_positive_int,
                        help="images per batch (default: the run's)")
    _add_run_flags(parser)


def _add_train_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``flowkit train``."""
    parser = commands.add_parser(
        "train", parents=[common], help="train a model, then evaluate the final one",
        description="Train a model on normal images, fit it, and evaluate the final model on "
        "the test split. Unset flags come from the model's defaults for the category (or, "
        "with --resume, from the run).",
    )
    parser.set_defaults(run=_run_train)
    data = parser.add_argument_group("data")
    data.add_argument("--data", choices=[s.value for s in DataSource],
                      help="dataset layout (default: synthetic)")
    data.add_argument("--data-root", metavar="DIR", help="dataset folder (not for synthetic)")
    data.add_argument("--category", metavar="NAME",
                      help=f"category (default for synthetic: {DEFAULT_SYNTHETIC_CATEGORY})")
    data.add_argument("--image-size", type=_positive_int, metavar="PX",
                      help="images are resized to PX x PX (default: the model's)")
    training = parser.add_argument_group("training")
    training.add_argument("--model", choices=sorted(MODELS),
                          help=f"registered model (default: {DEFAULT_MODEL})")
    training.add_argument("--epochs", type=_non_negative_int, help="default: the model's")
    training.add_argument("--batch-size", type=_positive_int,
                          help="the global batch: under torchrun each of N processes takes "
                          "1/N of it (default: the model's)")
    training.add_argument("--seed", type=int, help=f"default: {DEFAULT_SEED}")
    training.add_argument("--lr", type=_positive_float, help="Adam's learning rate")
    training.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"))
    training.add_argument("--eps", type=_positive_float)
    training.add_argument("--weight-decay", type=float)
    training.add_argument("--clip-grad-norm", type=float, metavar="NORM",
                          help="gradient-norm clip; 0 disables it")
    _add_run_flags(training)
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="RUN_DIR",
                        help=f"run folder (default: {DEFAULT_RUNS_DIR}/<model>-<category>)")
    mode = output.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its last checkpoint")
    mode.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    model = parser.add_argument_group("model settings (default: the model's for the category)")
    model.add_argument("--levels", type=_positive_int, help="pyramid levels")
    model.add_argument("--volume-norm", choices=(_AUTO, "channel", "spatial"),
                       help="channel (CVN) or spatial (SVN) volume normalization")
    model.add_argument("--channels", type=_positive_int)
    model.add_argument("--num-stack", type=_positive_int)
    model.add_argument("--kernel-size", type=_positive_int)
    model.add_argument("--memory-saving", action=argparse.BooleanOptionalAction,
                       help="rebuild activations in backward instead of storing them")
    model.add_argument("--backbone", help="CS-Flow: efficientnet-lite0, efficientnet-b5, random")
    model.add_argument("--backbone-weights", help="CS-Flow: local weights file (B5)")
    model.add_argument("--hidden", type=_positive_int, help="CS-Flow: subnet hidden width")
    model.add_argument("--num-blocks", type=_positive_int, help="CS-Flow: coupling blocks")
    model.add_argument("--last-kernel-size", type=_positive_int,
                       help="CS-Flow: kernel of the last block")
    model.add_argument("--map-mode", choices=("finest", "all"),
                       help="CS-Flow: anomaly map from the finest scale or all scales")


def _add_eval_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``flowkit eval``."""
    parser = commands.add_parser(
        "eval", parents=[common], help="recompute a run's metrics from its final checkpoint",
        description="Evaluate checkpoints/final.pt of a run on its test split; rewrites "
        "metrics.json, the heat maps and the curves.",
    )
    parser.set_defaults(run=_run_eval)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder of `flowkit train`")
    parser.add_argument("--data-root", metavar="DIR", help="the dataset, if it has moved")
    _add_inference_flags(parser)


def _add_predict_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``flowkit predict``."""
    parser = commands.add_parser(
        "predict", parents=[common], help="anomaly maps and verdicts for new images",
        description="Run a run's final model on image files or folders. Writes, per image, "
        "the anomaly map (16-bit PNG and/or float32 .npy) and an overlay PNG, and "
        f"{PREDICTIONS_FILE} with every image's score and verdict; an image is anomalous "
        "when its score exceeds the threshold fitted on the run's normal training images "
        "(threshold.json).",
    )
    parser.set_defaults(run=_run_predict)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder of `flowkit train`")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files, and folders of images")
    parser.add_argument("--out", metavar="DIR", required=True, help="the output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the --out folder of an earlier prediction")
    parser.add_argument("--recursive", action="store_true",
                        help="also take the images in sub-folders of the folders given")
    parser.add_argument("--format", choices=[f.value for f in OutputFormat],
                        default=OutputFormat.PNG.value,
                        help="anomaly-map files: 16-bit PNG, float32 .npy, or both "
                        "(default: %(default)s; the overlay PNG is always written)")
    parser.add_argument("--image-size", type=_positive_int, metavar="PX",
                        help="images are resized to PX x PX (default: the run's)")
    _add_inference_flags(parser)


def _add_data_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """``flowkit data synth``."""
    parser = commands.add_parser("data", help="datasets")
    jobs = parser.add_subparsers(dest="data_command", metavar="JOB", required=True)
    synth = jobs.add_parser(
        "synth", parents=[common], help="write the synthetic dataset (MVTec-AD layout)",
        description="Render the built-in synthetic defect dataset to DIR/<category>/...",
    )
    synth.set_defaults(run=_run_synth)
    defaults = SyntheticConfig()
    synth.add_argument("--out", metavar="DIR", required=True, help="the dataset root")
    synth.add_argument("--categories", nargs="+", choices=SYNTHETIC_CATEGORIES,
                       default=list(SYNTHETIC_CATEGORIES), metavar="NAME",
                       help=f"of {', '.join(SYNTHETIC_CATEGORIES)} (default: all)")
    synth.add_argument("--image-size", type=_positive_int, default=defaults.image_size)
    synth.add_argument("--seed", type=int, default=defaults.seed)
    synth.add_argument("--num-train", type=_non_negative_int, default=defaults.num_train)
    synth.add_argument("--num-test-good", type=_non_negative_int,
                       default=defaults.num_test_good)
    synth.add_argument("--num-test-per-defect", type=_non_negative_int,
                       default=defaults.num_test_per_defect)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    _import_model_modules()
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Invertible networks for PyTorch, and anomaly-localization models on them.",
    )
    parser.add_argument("--version", action="version", version=f"flowkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common_flags()
    _add_train_parser(commands, common)
    _add_eval_parser(commands, common)
    _add_predict_parser(commands, common)
    _add_data_parser(commands, common)
    return parser


# ---------------------------------------------------------------- resolving settings


def _first(*values: Any) -> Any:
    """The first value that is not ``None``."""
    return next((v for v in values if v is not None), None)


def _model_class(name: str) -> type[AnomalyModel]:
    """The registered class of ``name``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]  # type: ignore[return-value]  (register_model stores classes)


def _flag(key: str) -> str:
    """The command-line flag of a config key."""
    return "--" + key.replace("_", "-")


def _check_takes(cls: type[AnomalyModel], keys: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` if the model's constructor lacks any of ``keys``."""
    parameters = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in keys if key not in parameters]
    if unknown:
        raise ConfigError(
            f"the model {cls.name!r} does not take {', '.join(map(_flag, unknown))}; its "
            f"settings are {', '.join(map(_flag, parameters)) or 'none'}: drop those flags"
        )


def _data_settings(args: argparse.Namespace, base: RunConfig | None,
                   cls: type[AnomalyModel]) -> DataSettings:
    """The data settings from flags, else the run being resumed, else the defaults."""
    source = DataSource(_first(args.data, base and base.data.source, DataSource.SYNTHETIC))
    synthetic = source is DataSource.SYNTHETIC
    root = _first(args.data_root, base and base.data.root)
    category = _first(args.category, base and base.data.category,
                      DEFAULT_SYNTHETIC_CATEGORY if synthetic else None)
    if synthetic and category not in SYNTHETIC_CATEGORIES:
        raise ConfigError(f"unknown synthetic category {category!r}; choose --category from "
                          f"{', '.join(SYNTHETIC_CATEGORIES)}")
    if not synthetic and root is None:
        raise ConfigError(f"--data {source.value} needs --data-root DIR, the dataset folder")
    if source in (DataSource.MVTEC, DataSource.BTAD) and category is None:
        raise ConfigError(f"--data {source.value} needs --category NAME, a folder of "
                          f"{root}")
    root = None if root is None else str(Path(root).expanduser().resolve())
    # Synthetic images are rendered no larger than their native size (a CPU-friendly default);
    # real datasets get the model's (the paper's) size.
    default_size = cls.default_image_size
    if synthetic:
        default_size = min(default_size, SYNTHETIC_IMAGE_SIZE)
    image_size = _first(args.image_size, base and base.data.image_size, default_size)
    return DataSettings(source.value, root, category, image_size)


def _build_model(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel],
                  data: DataSettings) -> AnomalyModel:
    """The model built from flags over the resumed run's config or the category defaults."""
    flags = {key: getattr(args, key) for key in MODEL_FLAGS
             if getattr(args, key) not in (None, _AUTO)}
    _check_takes(cls, list(flags))
    if base is not None:
        config = {**base.model_config, **flags}
    else:
        config = {**cls.defaults_for(data.name), **flags}
        if "image_size" in inspect.signature(cls).parameters:  # models that size buffers
            config.setdefault("image_size", data.image_size)
    try:
        model = build_model(cls.name, **config)
        model.check_image_size(data.image_size, data.image_size)
    except ValueError as error:
        raise ConfigError(f"{error} (set with --image-size and the model flags)") from error
    return model


def _optimizer_settings(args: argparse.Namespace, base: RunConfig | None,
                        model: AnomalyModel) -> dict[str, Any]:
    """Adam's settings: the model's (or the resumed run's), with the flags given over them."""
    settings = dict(base.optimizer if base is not None else model.optimizer_settings())
    for key in _OPTIMIZER_FLAGS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if settings.get("clip_grad_norm") is not None and settings["clip_grad_norm"] <= 0:
        settings["clip_grad_norm"] = None
    return settings


def _epochs(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel],
            data: DataSettings) -> int:
    """Training epochs: 0 for a model fitted by ``fit_normal`` alone; on the synthetic data at
    most :data:`SYNTHETIC_EPOCHS` unless asked (the main job runs in minutes on a CPU)."""
    if not cls.needs_training:
        if args.epochs:
            raise ConfigError(f"the model {cls.name!r} is fitted without gradient steps; "
                              "drop --epochs")
        return 0
    default = cls.default_epochs
    if data.source == DataSource.SYNTHETIC.value:
        default = min(default, SYNTHETIC_EPOCHS)
    return _first(args.epochs, base and base.epochs, default)


def _changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs, nested dicts flattened."""
    changes = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changes


def resolve_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """A complete :class:`RunConfig` from ``flowkit train`` flags.

    Each setting comes from its flag when given, else from ``base`` (the run being resumed),
    else from the model: ``default_image_size``, ``default_epochs``, ``default_batch_size``,
    ``defaults_for(category)`` and ``optimizer_settings()``. The model is built once to
    complete its config and to check the image size.

    Args:
        args: parsed ``flowkit train`` arguments.
        base: the config of the run being resumed, if any.

    Returns:
        The run's settings.

    Raises:
        ConfigError: an unknown model, a missing ``--data-root`` or ``--category``, a flag
            the model does not take, an image size the model cannot split, or (resuming)
            a flag that changes a setting other than ``--epochs``.
    """
    cls = _model_class(_first(args.model, base and base.model, DEFAULT_MODEL))
    data = _data_settings(args, base, cls)
    model = _build_model(args, base, cls, data)
    config = RunConfig(
        model=cls.name,
        model_config=dict(model.config),
        data=data,
        epochs=_epochs(args, base, cls, data),
        batch_size=_first(args.batch_size, base and base.batch_size, cls.default_batch_size),
        seed=_first(args.seed, base and base.seed, DEFAULT_SEED),
        optimizer=_optimizer_settings(args, base, model),
    )
    if base is not None:
        old, new = base.to_json(), config.to_json()
        changes = _changes({k: v for k, v in old.items() if k not in _RESUMABLE_CHANGES},
                           {k: v for k, v in new.items() if k not in _RESUMABLE_CHANGES})
        if changes:
            raise ConfigError(
                f"--resume continues a run with its own settings, but the flags change "
                f"{'; '.join(changes)}: drop those flags, or start anew with --overwrite"
            )
    return config


def _device(name: str) -> torch.device:
    """The device of ``--device``."""
    if name == _AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda, but no CUDA device is available; use --device cpu")
    return torch.device(name)


def _options(args: argparse.Namespace, device: torch.device | None = None,
             distributed: Distributed | None = None,
             stop: StopSignals | None = None) -> TrainOptions:
    """Device, workers, progress bars (on a terminal, rank 0, unless ``--quiet``), processes
    and signal handlers."""
    distributed = distributed or Distributed()
    return TrainOptions(
        device=device or _device(args.device), workers=args.workers,
        progress=distributed.is_main and not args.quiet and sys.stderr.isatty(),
        quiet=args.quiet or not distributed.is_main, distributed=distributed, stop=stop,
    )


def _takes(cls: type[AnomalyModel], key: str) -> bool:
    """Whether the model's constructor takes ``key``."""
    parameters = inspect.signature(cls).parameters
    return key in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a GPU's or the host's allocator running out of memory."""
    return isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)) or (
        isinstance(error, RuntimeError)
        and any(text in str(error).lower() for text in _OUT_OF_MEMORY_MESSAGES))


@contextlib.contextmanager
def _memory_advice(doing: str, advice: str) -> Iterator[None]:
    """Turn running out of memory while ``doing`` into an :class:`OutOfMemoryError` whose
    one-line message gives ``advice``."""
    try:
        yield
    except (RuntimeError, MemoryError) as error:
        if not _is_out_of_memory(error):
            raise
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise OutOfMemoryError(f"out of memory while {doing} ({reason}); {advice}") from error


def _inference_advice(batch_size: int, device: torch.device) -> str:
    """What to do when evaluating or predicting runs out of memory."""
    cpu = " or --device cpu" if device.type == "cuda" else ""
    return f"lower --batch-size (now {batch_size}){cpu}"


def _single_process(command: str) -> None:
    """Refuse to run ``command`` under torchrun (it would run once per process)."""
    if world_size_from_environment() > 1:
        raise ConfigError(f"flowkit {command} runs in one process: start it with python or "
                          "flowkit, not torchrun")


# ---------------------------------------------------------------- commands


def _print_results(title: str, record: dict[str, Any]) -> None:
    """Print the metrics as an aligned table on stdout."""
    rows = [(label, f"{record[key]:.4f}") for key, label in METRIC_LABELS.items()]
    rows.append(("images/s (model only)", f"{record['images_per_second']:.1f}"))
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    print(title)
    print(f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(value_width)} |")
    print(f"({LEGACY_PRO_NOTE})")


def _evaluate(model: AnomalyModel, config: RunConfig, run: RunFolder, options: TrainOptions,
              batch_size: int) -> dict[str, Any]:
    """Evaluate the final model on the test split; write metrics.json, heat maps, curves."""
    dataset = config.data.dataset(Split.TEST.value)
    with _memory_advice("evaluating", _inference_advice(batch_size, options.device)):
        evaluation = predict_dataset(model, dataset, batch_size, options.device,
                                     options.workers)
    try:
        metrics = compute_metrics(evaluation)
    except ValueError as error:
        raise ConfigError(
            f"cannot compute the metrics on the test split of {config.data.name}: {error}"
        ) from error
    record = write_metrics(run.metrics, metrics, evaluation, options.device,
                           run.final_checkpoint.relative_to(run.root))
    save_heatmaps(run.heatmaps, dataset, evaluation)
    save_curves(run.curves, evaluation, metrics)
    return record


def _default_out(args: argparse.Namespace) -> Path:
    """``runs/<model>-<category>`` from the flags given."""
    synthetic = args.data in (None, DataSource.SYNTHETIC.value)
    category = _first(args.category, DEFAULT_SYNTHETIC_CATEGORY if synthetic else None,
                      Path(args.data_root or "data").name)
    return DEFAULT_RUNS_DIR / f"{args.model or DEFAULT_MODEL}-{category}"


def _training_advice(config: RunConfig) -> str:
    """What to do when training runs out of memory."""
    memory_saving = ", --memory-saving" if _takes(_model_class(config.model), "memory_saving") \
        else ""
    return (f"lower --batch-size (now {config.batch_size}){memory_saving} or a smaller "
            f"--image-size (now {config.data.image_size}), in a new run")


def _run_train(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit train``: every process checks everything before rank 0 touches the run
    folder; a new run that fails before its first checkpoint leaves nothing behind."""
    out = Path(args.out) if args.out else _default_out(args)
    mode = RunMode.RESUME if args.resume else RunMode.OVERWRITE if args.overwrite \
        else RunMode.NEW
    with distributed_session(_device(args.device)) as (distributed, device):
        RunFolder.check(out, mode)
        # Resuming: the run's own settings, the flags checked against them.
        config = resolve_config(args, RunFolder(out).read_config()
                                if mode is RunMode.RESUME else None)
        per_process_batch(config.batch_size, distributed.world_size)
        for split in Split:
            config.data.dataset(split.value)  # index the files: a missing folder fails here
        distributed.barrier()
        run = RunFolder.prepare(out, mode) if distributed.is_main else RunFolder(out)
        distributed.barrier()
        options = _options(args, device, distributed, stop)
        try:
            with _memory_advice("training", _training_advice(config)):
                model = train(config, run, options, resume=mode is RunMode.RESUME)
        except BaseException:
            if mode is RunMode.NEW and distributed.is_main:
                run.discard_if_untrained()
            raise
    if model is None:  # not rank 0: it reports
        return 0
    try:
        record = _evaluate(model, config, run, options, config.batch_size)
    except Interrupted as error:
        raise Interrupted(error.signal_number, f"{error} while evaluating; the final model "
                          f"is saved: evaluate it with flowkit eval {run.root}") from None
    _print_results(f"{config.model} on {config.data.name}, final model after {config.epochs} "
                   f"epochs: {run.root}", record)
    return 0


def _run_eval(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit eval RUN``."""
    _single_process("eval")
    run = RunFolder.open(args.run_dir)
    config = run.read_config()
    if args.data_root is not None:
        root = str(Path(args.data_root).expanduser().resolve())
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
    options = _options(args)
    model = load_model(run.final_checkpoint, options.device, expected_model=config.model)
    record = _evaluate(model, config, run, options, args.batch_size or config.batch_size)
    _print_results(f"{config.model} on {config.data.name}: {run.final_checkpoint}", record)
    return 0


def _check_predict_out(out: Path, overwrite: bool) -> None:
    """Refuse an existing ``--out`` without ``--overwrite``, and never replace a folder that
    holds anything but an earlier prediction."""
    if not out.exists():
        return
    if not overwrite:
        raise ConfigError(f"the output folder {out} exists; pass --overwrite to replace it, "
                          "or choose another --out")
    if not out.is_dir() or (any(out.iterdir()) and not (out / PREDICTIONS_FILE).is_file()):
        raise ConfigError(f"refusing to replace {out}: it does not hold the output of "
                          f"flowkit predict (no {PREDICTIONS_FILE}); choose another --out")


def _thresholds(run: RunFolder, config: RunConfig, model: AnomalyModel,
                options: TrainOptions, batch_size: int) -> tuple[Thresholds, bool]:
    """The run's thresholds, fitted on its training images if ``threshold.json`` is missing
    (a run trained before flowkit wrote it); and whether they were fitted now."""
    if run.threshold.is_file():
        return read_thresholds(run.threshold), False
    training = config.data.dataset(Split.TRAIN.value)
    return fit_thresholds(model, training, batch_size, options.device, options.workers), True


def _print_predictions(predictions: Sequence[Prediction], thresholds: Thresholds,
                       out: Path) -> None:
    """The threshold, one line per image (score, verdict, file), and a summary."""
    print(f"threshold: an image score above {thresholds.image:.6g} is anomalous (the "
          f"{thresholds.quantile} quantile of the {thresholds.num_images} normal training "
          "images' scores)")
    print(f"{'score':>12}  {'verdict':9}  image")
    for prediction in predictions:
        verdict = "ANOMALOUS" if prediction.anomalous else "normal"
        print(f"{prediction.score:12.6g}  {verdict:9}  {prediction.image}")
    anomalous = sum(p.anomalous for p in predictions)
    print(f"{anomalous} of {len(predictions)} images anomalous; maps, overlays and "
          f"{PREDICTIONS_FILE} in {out}")


def _run_predict(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit predict RUN IMAGES --out DIR``: nothing is written unless every image is
    predicted (the output folder is filled under a temporary name, then renamed)."""
    _single_process("predict")
    run = RunFolder.open(args.run_dir)
    config = run.read_config()
    out = Path(args.out)
    _check_predict_out(out, args.overwrite)
    images = find_images(args.images, args.recursive)
    options = _options(args)
    model = load_model(run.final_checkpoint, options.device, expected_model=config.model)
    size = args.image_size or config.data.image_size
    try:
        model.check_image_size(size, size)
    except ValueError as error:
        raise ConfigError(f"{error} (set --image-size)") from error
    batch_size = args.batch_size or config.batch_size
    with _memory_advice("predicting", _inference_advice(batch_size, options.device)):
        thresholds, fitted = _thresholds(run, config, model, options, batch_size)
        with atomic_folder(out) as folder:
            predictions = predict_images(model, images, folder, thresholds, size, batch_size,
                                         options.device, args.format, options.workers,
                                         options.progress)
            write_json(folder / PREDICTIONS_FILE, predictions_record(
                predictions, thresholds, run=str(run.root), checkpoint=str(run.final_checkpoint),
                model=config.model, image_size=size))
    if fitted:
        write_json(run.threshold, thresholds.to_json())
    _print_predictions(predictions, thresholds, out)
    return 0


def _run_synth(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit data synth``."""
    try:
        root = write_synthetic(args.out, args.categories, args.image_size, args.num_train,
                               args.num_test_good, args.num_test_per_defect, args.seed)
    except ValueError as error:
        raise ConfigError(f"{error}; change the flags") from error
    if not args.quiet:
        print(f"wrote {', '.join(args.categories)} to {root} (MVTec-AD layout)")
    return 0


# ---------------------------------------------------------------- entry point


def _one_line(error: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__


def _rank_prefix() -> str:
    """``"rank N: "`` for the processes after the first of a torchrun job, else ``""``."""
    rank = int(os.environ.get("RANK", "0"))
    return f"rank {rank}: " if rank else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        with StopSignals() as stop:
            return args.run(args, stop)
    except Interrupted as stopped:  # rank 0 reports what every process did
        if not _rank_prefix():
            print(_one_line(stopped), file=sys.stderr)
        return EXIT_SIGNAL_BASE + stopped.signal_number
    except _EXPECTED_ERRORS as error:
        if args is not None and args.debug:
            traceback.print_exc()
        print(f"{_rank_prefix()}error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; a training run continues from its last checkpoint with "
              "--resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: say so, keep the traceback for --debug
        if args is not None and args.debug:
            traceback.print_exc()
        print(f"{_rank_prefix()}error: unexpected {type(error).__name__}: {_one_line(error)} "
              "(a bug; rerun with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
