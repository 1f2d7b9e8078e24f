"""What determines a run's result: the model, the data and the optimization settings.

A :class:`RunConfig` is plain data: ``config.json`` stores it, every checkpoint carries it, and
the command line builds it (:mod:`flowkit.models.cli.settings`); nothing here trains or reads
checkpoints, so the config depends on no other part of the engine.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..base import MODELS
from ..data import (
    Augmentation,
    Choice,
    FolderDataset,
    Item,
    PairTransform,
    SyntheticDataset,
    is_texture,
)
from ..errors import ConfigError, RunFolderError
from ..metrics import DEFAULT_FPR_LIMIT

__all__ = ["SYNTHETIC_DATA_SEED", "DataSettings", "DataSource", "RunConfig"]

SYNTHETIC_DATA_SEED = 0
"""The synthetic dataset is the same for every run, whatever the training seed."""


class DataSource(Choice):
    """Where the images come from: rendered in memory, or a folder layout on disk."""

    SYNTHETIC = "synthetic"
    MVTEC = "mvtec"
    BTAD = "btad"
    FOLDER = "folder"


@dataclass(frozen=True)
class DataSettings:
    """Which images a run trains and tests on.

    Attributes:
        source: a :class:`DataSource` value.
        root: the dataset folder (``None`` for synthetic data).
        category: the category; for ``folder`` data ``None`` means ``root`` is the category.
        image_size: images are resized to ``image_size x image_size``.
    """

    source: str
    root: str | None
    category: str | None
    image_size: int

    @property
    def name(self) -> str:
        """The category, or the folder's name when the root is the category."""
        return self.category if self.category is not None else Path(self.root or "").name

    def dataset(self, split: str, transform: PairTransform | None = None) -> Dataset[Item]:
        """The ``train`` or ``test`` images.

        Raises:
            DatasetError: a missing or empty folder, a wrong layout.
        """
        source = DataSource(self.source)
        if source is DataSource.SYNTHETIC:
            return SyntheticDataset(self.name, split, image_size=self.image_size,
                                    seed=SYNTHETIC_DATA_SEED, transform=transform)
        return FolderDataset(self.root or "", self.category, split, layout=source.value,
                             image_size=self.image_size, transform=transform)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (not where or how fast it runs).

    Attributes:
        model: the registry name of the model.
        model_config: the model's constructor arguments, complete.
        data: the images.
        epochs: training epochs.
        batch_size: training batch size (also used for evaluation).
        seed: seeds torch, numpy, ``random`` and the data order.
        optimizer: Adam's arguments plus ``clip_grad_norm`` (``None``: no clipping).
        val_fraction: the fraction of the training images held out for validation, with
            pasted defects, to choose the best epoch (see :mod:`.validation`); 0 (what a run
            written before this field did): no validation.
        select_by: the validation metric the best epoch maximizes, a key of
            ``metrics.json`` (``aupro_0.3`` or ``pixel_auroc``).
        val_every: score the validation split after every ``val_every``-th epoch and after
            the last (1, what a run written before this field did: every epoch).
        augment: an :class:`~flowkit.models.data.Augmentation` value: whether the training
            images are flipped and rotated (``auto``: the model's rule,
            :meth:`~flowkit.models.base.AnomalyModel.augments_by_default`; a run written
            before this field reads as what it did, see :meth:`from_json`).
    """

    model: str
    model_config: dict[str, Any]
    data: DataSettings
    epochs: int
    batch_size: int
    seed: int
    optimizer: dict[str, Any]
    val_fraction: float = 0.0
    select_by: str = f"aupro_{DEFAULT_FPR_LIMIT}"
    val_every: int = 1
    augment: str = Augmentation.AUTO.value

    def augments(self) -> bool:
        """Whether the training images are flipped and rotated.

        Raises:
            ConfigError: an unknown ``augment``.
        """
        try:
            augment = Augmentation(self.augment)
        except ValueError as error:
            raise ConfigError(f"--augment: {error}") from error
        if augment is Augmentation.AUTO:
            return MODELS[self.model].augments_by_default(self.data.name)
        return augment is Augmentation.ON

    def validates(self, epoch: int) -> bool:
        """Whether the validation split is scored after ``epoch`` (1-based): every
        ``val_every``-th epoch and the last."""
        return epoch % self.val_every == 0 or epoch == self.epochs

    def __post_init__(self) -> None:
        # Stored as JSON stores them (tuples as lists), so a config read back compares equal.
        for name in ("model_config", "optimizer"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-able data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_json`.

        A ``model_config`` written before the model gained a constructor argument gets the
        value that reproduces it (:attr:`~flowkit.models.base.AnomalyModel.config_added`), as
        its checkpoints do: resuming, comparing and rebuilding the run see what it trained.
        So does a config written before ``augment``: every texture was turned then (``on``
        for a model that trains on one; else ``auto``, which turns no object).

        Raises:
            RunFolderError: missing or unknown fields.
        """
        try:
            model = MODELS.get(data["model"])
            added = model.config_added if model is not None else {}
            settings = DataSettings(**data["data"])
            turned = model is not None and model.needs_training and is_texture(settings.name)
            augment = (Augmentation.ON if turned else Augmentation.AUTO).value
            return cls(**{"augment": augment, **data, "data": settings,
                          "model_config": {**added, **data["model_config"]}})
        except (TypeError, KeyError) as error:
            raise RunFolderError(
                f"the run config does not match this flowkit version ({error}); "
                "start a new run with this version"
            ) from error
