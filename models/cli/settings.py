"""A training run's settings from ``flowkit train`` flags: each from its flag when given, else
from ``--preset``, else from the run being resumed, else from the model's defaults."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..base import MODELS, AnomalyModel, build_model
from ..data import SYNTHETIC_CATEGORIES, Augmentation
from ..engine.config import DataSettings, DataSource, RunConfig
from ..errors import ConfigError
from .common import first
from .model_flags import model_flag_values
from .validation_flags import with_validation

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_RUNS_DIR",
    "DEFAULT_SEED",
    "DEFAULT_SYNTHETIC_CATEGORY",
    "OPTIMIZER_FLAGS",
    "apply_preset",
    "default_out",
    "flag",
    "model_class",
    "resolve_config",
    "takes",
]

DEFAULT_MODEL = "pyramidflow"
DEFAULT_SYNTHETIC_CATEGORY = "brick"
DEFAULT_RUNS_DIR = Path("runs")
DEFAULT_SEED = 0

OPTIMIZER_FLAGS = ("lr", "betas", "eps", "weight_decay", "clip_grad_norm")
"""The optimizer settings that are flags of ``flowkit train``."""
_RESUMABLE_CHANGES = frozenset({"epochs"})  # a resumed run may be extended
_PATH_SUFFIX = "_weights"  # model flags naming files: stored absolute, so runs work from anywhere


def model_class(name: str) -> type[AnomalyModel]:
    """The registered class of ``name``.

    Raises:
        ConfigError: an unknown name.
    """
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def flag(key: str) -> str:
    """The command-line flag of a config key."""
    return "--" + key.replace("_", "-")


def _as_flag(key: str, value: Any) -> str:
    """How a setting is written on the command line (``--memory-saving``, ``--levels 2``)."""
    if isinstance(value, bool):
        return flag(key) if value else "--no-" + flag(key)[2:]
    return f"{flag(key)} {value}"


def takes(cls: type[AnomalyModel], key: str) -> bool:
    """Whether the model's constructor takes ``key``."""
    parameters = inspect.signature(cls).parameters
    return key in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def _check_takes(cls: type[AnomalyModel], keys: Sequence[str]) -> None:
    """Raise a :class:`ConfigError` if the model's constructor lacks any of ``keys``."""
    unknown = [key for key in keys if not takes(cls, key)]
    if unknown:
        parameters = inspect.signature(cls).parameters
        raise ConfigError(
            f"the model {cls.name!r} does not take {', '.join(map(flag, unknown))}; its "
            f"settings are {', '.join(map(flag, parameters)) or 'none'}: drop those flags"
        )


def apply_preset(args: argparse.Namespace) -> None:
    """Fill the flags not given from the model's ``--preset`` (see
    :attr:`AnomalyModel.presets`).

    Raises:
        ConfigError: a preset the model does not have (the message lists those it has).
    """
    if args.preset is None:
        return
    cls = model_class(first(args.model, DEFAULT_MODEL))
    if args.preset not in cls.presets:
        choices = ", ".join(sorted(cls.presets)) or "none"
        raise ConfigError(f"the model {cls.name!r} has no preset {args.preset!r}; its presets: "
                          f"{choices}")
    for key, value in cls.presets[args.preset].items():
        if not hasattr(args, key):
            raise ConfigError(f"the preset {args.preset!r} of {cls.name!r} sets {key!r}, which "
                              "is no flowkit train setting; fix the model's presets")
        if getattr(args, key) is None:
            setattr(args, key, value)


def _data_settings(args: argparse.Namespace, base: RunConfig | None,
                   cls: type[AnomalyModel]) -> DataSettings:
    """The data settings from flags, else the run being resumed, else the defaults."""
    source = DataSource(first(args.data, base and base.data.source, DataSource.SYNTHETIC))
    synthetic = source is DataSource.SYNTHETIC
    root = first(args.data_root, base and base.data.root)
    category = first(args.category, base and base.data.category,
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
    default_size = cls.synthetic_image_size if synthetic else cls.default_image_size
    image_size = first(args.image_size, base and base.data.image_size, default_size)
    return DataSettings(source.value, root, category, image_size)


def _build_model(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel],
                 data: DataSettings) -> AnomalyModel:
    """The model built from flags over the resumed run's config or the category defaults."""
    flags = {key: str(Path(value).expanduser().resolve()) if key.endswith(_PATH_SUFFIX) else value
             for key, value in model_flag_values(args).items()}
    _check_takes(cls, list(flags))
    if base is not None:
        config = {**base.model_config, **flags}
    else:
        config = {**cls.defaults_for(data.name), **flags}
        if "image_size" in inspect.signature(cls).parameters:  # models that size buffers
            config.setdefault("image_size", data.image_size)
    given = " ".join(_as_flag(key, value) for key, value in flags.items())
    try:
        model = build_model(cls.name, **config)
    except (ValueError, OSError) as error:  # OSError: a weights file that is not there
        settings = given or f"its defaults for {data.name}"
        raise ConfigError(f"cannot build {cls.name} with {settings}: {error}") from error
    try:
        model.check_image_size(data.image_size, data.image_size)
    except ValueError as error:
        raise ConfigError(f"--image-size {data.image_size}: {error}") from error
    return model


def _optimizer_settings(args: argparse.Namespace, base: RunConfig | None,
                        model: AnomalyModel) -> dict[str, Any]:
    """Adam's settings: the model's (or the resumed run's), with the flags given over them."""
    settings = dict(base.optimizer if base is not None else model.optimizer_settings())
    for key in OPTIMIZER_FLAGS:
        value = getattr(args, key)
        if value is not None:
            settings[key] = value
    if settings.get("clip_grad_norm") is not None and settings["clip_grad_norm"] <= 0:
        settings["clip_grad_norm"] = None
    return settings


def _epochs(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel],
            data: DataSettings) -> int:
    """Training epochs: 0 for a model fitted by ``fit_normal`` alone; on the synthetic data
    the model's ``synthetic_epochs`` unless asked (the main job runs in minutes on a CPU)."""
    if not cls.needs_training:
        if args.epochs:
            raise ConfigError(f"the model {cls.name!r} is fitted without gradient steps; "
                              "drop --epochs")
        return 0
    synthetic = data.source == DataSource.SYNTHETIC.value
    default = cls.synthetic_epochs if synthetic else cls.default_epochs
    return first(args.epochs, base and base.epochs, default)


def _augment(args: argparse.Namespace, base: RunConfig | None, cls: type[AnomalyModel]) -> str:
    """``--augment``, else the resumed run's, else ``auto``; refused (``on``, ``off``) for a
    model fitted without gradient steps, which sees only the plain images."""
    augment = first(args.augment, base and base.augment, Augmentation.AUTO.value)
    if not cls.needs_training and augment != Augmentation.AUTO.value:
        raise ConfigError(f"the model {cls.name!r} is fitted without gradient steps, on the "
                          f"images as they are: --augment {augment} would change nothing; "
                          "drop it")
    return augment


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


def default_out(args: argparse.Namespace) -> Path:
    """``runs/<model>-<category>`` from the flags given."""
    synthetic = args.data in (None, DataSource.SYNTHETIC.value)
    category = first(args.category, DEFAULT_SYNTHETIC_CATEGORY if synthetic else None,
                     Path(args.data_root or "data").name)
    return DEFAULT_RUNS_DIR / f"{args.model or DEFAULT_MODEL}-{category}"


def resolve_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """A complete :class:`RunConfig` from ``flowkit train`` flags.

    Each setting comes from its flag when given, else from ``--preset``, else from ``base``
    (the run being resumed), else from the model: ``default_image_size`` and
    ``default_epochs`` (``synthetic_image_size`` and ``synthetic_epochs`` on the synthetic
    data), ``default_batch_size``, ``defaults_for(category)`` and ``optimizer_settings()``.
    The model is built once to complete its config and to check the image size.

    Args:
        args: parsed ``flowkit train`` arguments.
        base: the config of the run being resumed, if any.

    Returns:
        The run's settings.

    Raises:
        ConfigError: an unknown model or preset, a missing ``--data-root`` or
            ``--category``, a flag the model does not take, an image size the model cannot
            split, or (resuming) a flag that changes a setting other than ``--epochs``.
    """
    apply_preset(args)
    cls = model_class(first(args.model, base and base.model, DEFAULT_MODEL))
    data = _data_settings(args, base, cls)
    model = _build_model(args, base, cls, data)
    config = RunConfig(
        model=cls.name,
        model_config=dict(model.config),
        data=data,
        epochs=_epochs(args, base, cls, data),
        batch_size=first(args.batch_size, base and base.batch_size, cls.default_batch_size),
        seed=first(args.seed, base and base.seed, DEFAULT_SEED),
        optimizer=_optimizer_settings(args, base, model),
        augment=_augment(args, base, cls),
    )
    config = with_validation(args, base, config)
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
