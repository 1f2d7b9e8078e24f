"""The ``flowkit`` command line: one entry point, one subcommand per job.

``flowkit train`` trains a registered model and evaluates the final one on the test split,
``flowkit eval RUN`` recomputes a run's metrics from its final checkpoint, and
``flowkit data synth`` writes the synthetic dataset to disk in the MVTec-AD layout.

Expected failures (a missing dataset folder, an unreadable image, an image size the model
cannot take, a bad checkpoint, an existing run folder, a NaN loss) print one ``error:`` line
naming the problem and the fix, and exit with code 2; a bug exits with 1. ``--debug`` adds
the traceback. Models from other packages join the ``--model`` choices when their modules are
listed, comma-separated, in the environment variable ``FLOWKIT_MODEL_MODULES``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from flowkit import __version__

from . import baseline, pyramidflow  # noqa: F401  (importing them registers the models)
from .base import MODELS, AnomalyModel, build_model
from .checkpoint import load_model
from .data import DEFAULT_IMAGE_SIZE as SYNTHETIC_IMAGE_SIZE
from .data import SYNTHETIC_CATEGORIES, DatasetError, Split, SyntheticConfig, write_synthetic
from .errors import AppError, ConfigError
from .evaluate import (
    LEGACY_PRO_NOTE,
    METRIC_LABELS,
    compute_metrics,
    predict_dataset,
    write_metrics,
)
from .run import DataSettings, DataSource, RunConfig, RunFolder, RunMode
from .train import TrainOptions, train
from .visualize import save_curves, save_heatmaps

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_SYNTHETIC_CATEGORY",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_UNEXPECTED",
    "MODEL_FLAGS",
    "MODEL_MODULES_VARIABLE",
    "build_parser",
    "main",
    "resolve_config",
]

DEFAULT_MODEL = "pyramidflow"
DEFAULT_SYNTHETIC_CATEGORY = "brick"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_SEED = 0
EXIT_ERROR = 2
"""An expected failure the user can fix (also argparse's code for bad arguments)."""
EXIT_UNEXPECTED = 1
EXIT_INTERRUPTED = 130
MODEL_MODULES_VARIABLE = "FLOWKIT_MODEL_MODULES"

MODEL_FLAGS = ("levels", "volume_norm", "channels", "num_stack", "kernel_size", "memory_saving")
"""Flags passed to the model's constructor under the same name, when given."""

_AUTO = "auto"
_OPTIMIZER_FLAGS = ("lr", "betas", "eps", "weight_decay", "clip_grad_norm")
_RESUMABLE_CHANGES = frozenset({"epochs"})  # a resumed run may be extended
_EXPECTED_ERRORS = (AppError, DatasetError)


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
    training.add_argument("--batch-size", type=_positive_int, help="default: the model's")
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
                      help="continue the run in --out from its last finished epoch")
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
    _add_run_flags(parser)


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


def _epochs(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel]) -> int:
    """Training epochs: 0 for a model fitted by ``fit_normal`` alone."""
    if not cls.needs_training:
        if args.epochs:
            raise ConfigError(f"the model {cls.name!r} is fitted without gradient steps; "
                              "drop --epochs")
        return 0
    return _first(args.epochs, base and base.epochs, cls.default_epochs)


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
        epochs=_epochs(args, base, cls),
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


def _options(args: argparse.Namespace) -> TrainOptions:
    """Device, workers and progress bars (shown on a terminal unless ``--quiet``)."""
    return TrainOptions(device=_device(args.device), workers=args.workers,
                        progress=not args.quiet and sys.stderr.isatty(), quiet=args.quiet)


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


def _evaluate(model: AnomalyModel, config: RunConfig, run: RunFolder,
              options: TrainOptions) -> dict[str, Any]:
    """Evaluate the final model on the test split; write metrics.json, heat maps, curves."""
    dataset = config.data.dataset(Split.TEST.value)
    evaluation = predict_dataset(model, dataset, config.batch_size, options.device,
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


def _run_train(args: argparse.Namespace) -> int:
    """``flowkit train``: everything is checked before the run folder is touched."""
    out = Path(args.out) if args.out else _default_out(args)
    mode = RunMode.RESUME if args.resume else RunMode.OVERWRITE if args.overwrite \
        else RunMode.NEW
    if mode is RunMode.RESUME:  # the run's own settings, flags checked against them
        run = RunFolder.prepare(out, mode)
        config = resolve_config(args, run.read_config())
    else:
        config = resolve_config(args)
    options = _options(args)
    for split in Split:
        config.data.dataset(split.value)  # index the files: a missing folder fails here
    if mode is not RunMode.RESUME:
        run = RunFolder.prepare(out, mode)
    model = train(config, run, options, resume=mode is RunMode.RESUME)
    record = _evaluate(model, config, run, options)
    _print_results(f"{config.model} on {config.data.name}, final model after {config.epochs} "
                   f"epochs: {run.root}", record)
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    """``flowkit eval RUN``."""
    run = RunFolder.open(args.run_dir)
    config = run.read_config()
    if args.data_root is not None:
        root = str(Path(args.data_root).expanduser().resolve())
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=root))
    options = _options(args)
    model = load_model(run.final_checkpoint, options.device, expected_model=config.model)
    record = _evaluate(model, config, run, options)
    _print_results(f"{config.model} on {config.data.name}: {run.final_checkpoint}", record)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        return args.run(args)
    except _EXPECTED_ERRORS as error:
        if args is not None and args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; a training run continues from its last finished epoch "
              "with --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # a bug: say so, keep the traceback for --debug
        if args is not None and args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(error).__name__}: {_one_line(error)} (a bug; rerun "
              "with --debug for the traceback and report it)", file=sys.stderr)
        return EXIT_UNEXPECTED


if __name__ == "__main__":
    sys.exit(main())
