"""What the application needs from an anomaly-localization model, and the model registry.

A model is a pure ``nn.Module`` (anomalib's convention) with a training loss, an optional
post-training fit on normal images (PyramidFlow's template), and an anomaly map. Its
constructor arguments form a JSON-able config, stored in every checkpoint, so a checkpoint
rebuilds the model without pickled code.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .data.augment import is_texture
from .errors import ConfigError

__all__ = [
    "BUILTIN_MODELS",
    "MODELS",
    "AnomalyModel",
    "OptimizerSettings",
    "build_model",
    "register_model",
]

BUILTIN_MODELS = {
    "baseline": "flowkit.models.baseline",
    "csflow": "flowkit.models.csflow",
    "pyramidflow": "flowkit.models.pyramidflow",
}
"""The models flowkit ships, by registry name, with the module that registers each: imported
the first time the registry is read, so that importing :mod:`flowkit.models` stays cheap."""


class OptimizerSettings(dict):
    """Keyword arguments of ``torch.optim.Adam`` plus ``clip_grad_norm`` (``None``: no clip)."""


class AnomalyModel(nn.Module, abc.ABC):
    """The interface between a model and the training / evaluation application.

    Attributes:
        name: the registry name (``"pyramidflow"``, ``"csflow"``).
        config: the constructor's keyword arguments, JSON-able.
    """

    name: str = ""
    #: ``False`` for models fitted by :meth:`fit_normal` alone (no gradient steps).
    needs_training: bool = True
    #: Command-line defaults when no flag is given; small enough for a CPU run in minutes.
    default_image_size: int = 256
    default_epochs: int = 15
    default_batch_size: int = 2
    #: The defaults on the built-in synthetic data (rendered at 128 px): a CPU run in minutes.
    synthetic_image_size: int = 128
    synthetic_epochs: int = 5
    #: The smallest training batch the loss is defined for (2 for a loss over pairs).
    min_batch_size: int = 1
    #: Named settings for ``flowkit train --preset NAME``: each maps ``flowkit train`` settings
    #: (flag names with underscores, e.g. ``image_size``, ``epochs``, a config key) to values;
    #: flags given on the command line take precedence.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Constructor arguments added after checkpoints were first written, each with the value
    #: that computes what the model did before it existed (not today's default): a stored
    #: config that lacks one is rebuilt with that value, so an old checkpoint loads and scores
    #: as it did when it was saved.
    config_added: ClassVar[dict[str, Any]] = {}

    def __init__(self, **config: Any) -> None:
        super().__init__()
        self.config = dict(config)

    @classmethod
    def defaults_for(cls, category: str) -> dict[str, Any]:
        """Constructor arguments recommended for a data category (e.g. the paper's per-class
        settings); the command line fills in those the user did not give. Default: none."""
        return {}

    #: The rule of :meth:`augments_by_default`, in words (``train.log`` quotes it).
    augment_rule: ClassVar[str] = "textures (MVTec AD's five and the synthetic ones)"

    @classmethod
    def augments_by_default(cls, category: str) -> bool:
        """Whether ``flowkit train --augment auto`` flips and turns the training images of
        ``category``. Default: textures, not aligned objects (one upside down is an anomaly)."""
        return is_texture(category)

    @classmethod
    def check_config(cls, config: dict[str, Any], batch_size: int) -> None:
        """Refuse training settings this model cannot train with, before anything runs.

        The default checks :attr:`min_batch_size`; a model with more constraints extends it.

        Args:
            config: the constructor arguments.
            batch_size: the training batch (per process).

        Raises:
            ConfigError: the settings cannot work; the message names the flag to change.
        """
        if batch_size < cls.min_batch_size:
            raise ConfigError(
                f"{cls.name} trains on batches of at least {cls.min_batch_size} images (its "
                f"loss needs them), got {batch_size}; pass --batch-size {cls.min_batch_size} "
                "or more"
            )

    @abc.abstractmethod
    def loss(self, images: Tensor) -> Tensor:
        """The scalar training loss of a batch of normalized images ``[B, 3, H, W]``."""

    def fit_normal(self, batches: Iterable[Tensor]) -> None:
        """After training: statistics of normal images (e.g. a template); default: nothing."""

    @abc.abstractmethod
    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-pixel anomaly scores ``[B, 1, H, W]`` at the images' resolution (eval mode)."""

    def image_score(self, maps: Tensor) -> Tensor:
        """Per-image anomaly scores ``[B]`` from the maps; default: the maximum of each map."""
        return maps.flatten(1).amax(dim=1)

    def optimizer_settings(self) -> OptimizerSettings:
        """Adam's settings for this model (the paper's), overridable from the command line."""
        return OptimizerSettings(lr=1e-3, clip_grad_norm=None)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimizer updates (frozen encoders excluded)."""
        return [p for p in self.parameters() if p.requires_grad]

    def size_multiple(self) -> int:
        """Image height and width must be multiples of this (1: any size)."""
        return 1

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` naming the nearest valid sizes if the model cannot take these."""
        multiple = self.size_multiple()
        for name, n in (("height", height), ("width", width)):
            if n % multiple or n < multiple:
                lower = max(multiple, n - n % multiple)
                raise ValueError(
                    f"image {name} {n} is not a multiple of {multiple}, which "
                    f"{self.name} needs with these settings; use {lower} or {lower + multiple}"
                )

    @torch.no_grad()
    def predict(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(maps [B, 1, H, W], scores [B])`` in eval mode."""
        maps = self.anomaly_map(images)
        return maps, self.image_score(maps)


class _Registry(Mapping[str, type[AnomalyModel]]):
    """The registered models by name; the built-in ones are imported on the first read."""

    def __init__(self) -> None:
        self._models: dict[str, type[AnomalyModel]] = {}
        self._loaded = False

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in BUILTIN_MODELS.values():
                importlib.import_module(module)

    def add(self, name: str, cls: type[AnomalyModel]) -> None:
        """Register ``cls`` under ``name`` (without importing the built-in models)."""
        self._models[name] = cls

    def __getitem__(self, name: str) -> type[AnomalyModel]:
        self._load()
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._models)

    def __len__(self) -> int:
        self._load()
        return len(self._models)


MODELS = _Registry()
"""Every registered model class by name: the built-in ones, and those of modules that call
:func:`register_model`."""


def register_model(name: str) -> Callable[[type[AnomalyModel]], type[AnomalyModel]]:
    """Class decorator adding a model to :data:`MODELS` under ``name``."""

    def add(cls: type[AnomalyModel]) -> type[AnomalyModel]:
        cls.name = name
        MODELS.add(name, cls)
        return cls

    return add


def build_model(name: str, **config: Any) -> AnomalyModel:
    """The registered model ``name`` built from its config."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return MODELS[name](**config)
