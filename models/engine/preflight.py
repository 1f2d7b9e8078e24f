"""Checks before a run starts: every setting, every file's header, both classes in the test
split, and the model's own constraints, in seconds and before anything is written."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from torch.utils.data import Dataset

from ..base import MODELS
from ..data import (
    GOOD,
    DatasetError,
    FolderDataset,
    Item,
    Split,
    SyntheticDataset,
    read_size,
)
from ..data.synthetic_scenes import PHOTO_TEXTURES, SYNTHETIC_DETAIL
from ..errors import ConfigError
from .config import RunConfig
from .distributed import per_process_batch
from .validation import split_training

__all__ = ["DataReport", "check_optimizer", "check_test_split", "preflight", "scan_images"]

_BETA_RANGE = "[0, 1)"


@dataclass(frozen=True)
class DataReport:
    """What the checks found on disk.

    Attributes:
        sizes: how many image files have each ``(height, width)`` (empty for in-memory data).
        detail: for rendered textures, the source pixels per image side (else ``None``).
    """

    sizes: Counter[tuple[int, int]]
    detail: int | None = None

    def resize_note(self, image_size: int) -> str | None:
        """A line saying how the files are resized to ``image_size`` (or that rendered
        textures are upsampled); ``None`` when nothing is upsampled or resized."""
        if self.detail is not None and image_size > self.detail:
            return (f"note: the synthetic textures hold {self.detail} px of detail per side; at "
                    f"{image_size} px they are upsampled, which adds no detail: pass "
                    f"--image-size {self.detail} or less, or --category nut (drawn at any size)")
        target = (image_size, image_size)
        others = {size: n for size, n in self.sizes.items() if size != target}
        if not others:
            return None
        smaller = [size for size in others if size[0] < image_size or size[1] < image_size]
        listed = ", ".join(f"{n} of {h}x{w}" for (h, w), n in sorted(others.items()))
        note = f"note: resizing the image files ({listed} px) to {image_size}x{image_size}"
        if smaller:
            side = min(min(size) for size in smaller)
            note += (f"; smaller ones are upsampled, which adds no detail: pass --image-size "
                     f"{side} or less to train at their size")
        return note


def check_optimizer(settings: dict[str, Any]) -> None:
    """Refuse Adam settings that Adam would refuse once training starts.

    Raises:
        ConfigError: ``lr`` or ``eps`` not positive, ``betas`` outside [0, 1),
            ``weight_decay`` negative.
    """
    for key in ("lr", "eps"):
        if key in settings and not settings[key] > 0:
            raise ConfigError(f"--{key} must be positive, got {settings[key]}")
    for beta in settings.get("betas", ()):
        if not 0 <= beta < 1:
            raise ConfigError(f"--betas must lie in {_BETA_RANGE}, got {settings['betas']}; "
                              "e.g. --betas 0.9 0.999")
    if settings.get("weight_decay", 0) < 0:
        raise ConfigError(f"--weight-decay must be zero or more, got {settings['weight_decay']}")


def _defects(dataset: Dataset[Item]) -> list[str]:
    """The defect type of every image, without loading any."""
    if isinstance(dataset, FolderDataset):
        return [sample.defect for sample in dataset.samples]
    if isinstance(dataset, SyntheticDataset):
        return [defect for defect, _ in dataset.index]
    raise TypeError(f"cannot list the defects of a {type(dataset).__name__} without loading it")


def check_test_split(dataset: Dataset[Item], name: str) -> None:
    """Refuse a test split without normal or without defective images: the metrics compare
    the two.

    Raises:
        ConfigError: naming the folder to fill.
    """
    counts = Counter(defect == GOOD for defect in _defects(dataset))
    where = f" in {dataset.category_dir}" if isinstance(dataset, FolderDataset) else ""
    if not counts[False]:
        raise ConfigError(
            f"the test split of {name}{where} has {counts[True]} normal and no defective "
            "images, but the metrics compare both: add defective images as test/<defect>/*.png "
            "with masks ground_truth/<defect>/<name>_mask.png (README: Datasets)"
        )
    if not counts[True]:
        raise ConfigError(
            f"the test split of {name}{where} has no normal images, but the metrics compare "
            "normal and defective ones: add normal images to test/good/ (README: Datasets)"
        )


def scan_images(dataset: Dataset[Item]) -> Counter[tuple[int, int]]:
    """Check every image and mask file's header (no pixel decoding); count the image sizes.

    Raises:
        DatasetError: a file that is not a readable image, or a mask of another size than
            its image, named.
    """
    sizes: Counter[tuple[int, int]] = Counter()
    if not isinstance(dataset, FolderDataset):
        return sizes
    for sample in dataset.samples:
        size = read_size(sample.image_path)
        sizes[size] += 1
        mask_size = None if sample.mask_path is None else read_size(sample.mask_path)
        if mask_size not in (None, size):
            raise DatasetError(
                f"mask {sample.mask_path} has size {mask_size}, but its image "
                f"{sample.image_path} has size {size}; they must match: fix or replace the mask"
            )
    return sizes


def preflight(config: RunConfig, world_size: int = 1) -> DataReport:
    """Check a run's settings and data before anything is written.

    Args:
        config: the run's settings.
        world_size: the processes sharing each batch.

    Returns:
        What was found on disk.

    Raises:
        ConfigError: a setting that cannot work (batch, optimizer, augmentation, the model's
            constraints, a validation split leaving too few images on either side), a test
            split without both classes.
        DatasetError: a missing folder, a wrong layout, an unreadable file.
    """
    per_process = per_process_batch(config.batch_size, world_size)
    MODELS[config.model].check_config(config.model_config, per_process)
    check_optimizer(config.optimizer)
    config.augments()  # raises on an unknown value
    train = config.data.dataset(Split.TRAIN.value)
    test = config.data.dataset(Split.TEST.value)
    if len(train) < config.batch_size:
        raise ConfigError(
            f"the training set has {len(train)} images, fewer than one batch of "
            f"{config.batch_size}; pass --batch-size {max(len(train), 1)} or less"
        )
    split_training(len(train), config.val_fraction, config.batch_size)
    check_test_split(test, config.data.name)
    textures = isinstance(train, SyntheticDataset) and train.category in PHOTO_TEXTURES
    return DataReport(scan_images(train) + scan_images(test),
                      SYNTHETIC_DETAIL if textures else None)
