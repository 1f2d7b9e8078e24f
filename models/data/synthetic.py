"""A built-in synthetic defect dataset from textures scikit-image ships: the zero-download default.

Categories are three textures (``brick``, ``grass``, ``gravel``: crops of the photographs in
``skimage.data``, coloured) and one aligned object (``nut``: a rendered hexagonal nut). Normal
images vary by crop, scale, brightness and sensor noise (textures) or by a small shift and
rotation (the nut). Defects are drawn onto a normal image with a soft-edged opacity that is
zero outside the defect, so the mask is pixel-exact: a pixel is in the mask exactly when the
defect changed it. Everything is a deterministic function of the seed.

Three harder categories, procedural and drawn at any size, carry subtle defects, most of
which an untrained model and the mean-image baseline do not find (``benchmarks/RESULTS.md``):
the textures ``fabric`` (a plain weave) and ``steel`` (brushed), with faint stains, hairline
scratches and patches of the same texture with another structure, and the object ``pcb`` (a
circuit board), with parts misplaced, missing or extra, the whole board shifted, and hairlines.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from skimage.util import img_as_float32
from torch.utils.data import Dataset

from .folder import PairTransform
from .image_io import write_png
from .item import GOOD, Item, Split, make_item
from .layouts import GROUND_TRUTH_DIR
from .synthetic_defects import DRAWERS, SYNTHETIC_DEFECTS, Defect
from .synthetic_scenes import (
    SENSOR_NOISE,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_OBJECTS,
    SYNTHETIC_TEXTURES,
    make_scene,
)

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DEFECTS",
    "SYNTHETIC_OBJECTS",
    "SYNTHETIC_TEXTURES",
    "Defect",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticImage",
    "render_synthetic",
    "synthetic_index",
    "write_synthetic",
]

DEFAULT_IMAGE_SIZE = 128
"""Small enough to train PyramidFlow on a CPU in minutes; the pyramid splits it 3 times."""

_REFERENCE_SIZE = 128  # the defects' geometric constants are in pixels at this image size
_MIN_DEFECT_FRACTION = 0.0015  # of the image area; smaller draws are redrawn
_MAX_DRAWS = 50
_SPLIT_CODES = {Split.TRAIN: 1, Split.TEST: 2}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of a synthetic dataset.

    Attributes:
        image_size: side of the square images, at least 32.
        num_train: normal training images per category.
        num_test_good: normal test images per category.
        num_test_per_defect: test images per defect type and category.
        seed: every image is a function of the seed, category, split, defect and index.
    """

    image_size: int = DEFAULT_IMAGE_SIZE
    num_train: int = 48
    num_test_good: int = 12
    num_test_per_defect: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32, got {self.image_size}")
        counts = (self.num_train, self.num_test_good, self.num_test_per_defect)
        if min(counts) < 0:
            raise ValueError(f"image counts must be non-negative, got {counts}")


class SyntheticImage(NamedTuple):
    """A rendered image, its mask, and the same image without the defect.

    Attributes:
        image: ``[S, S, 3]`` uint8.
        mask: ``[S, S]`` bool, all False for a normal image.
        normal: ``[S, S, 3]`` uint8, the image before the defect was drawn.
    """

    image: np.ndarray
    mask: np.ndarray
    normal: np.ndarray


def _check_category(category: str) -> None:
    """Raise a ValueError naming the choices unless ``category`` is synthetic."""
    if category not in SYNTHETIC_CATEGORIES:
        raise ValueError(
            f"unknown synthetic category {category!r}; choose from {list(SYNTHETIC_CATEGORIES)}"
        )


# ---------------------------------------------------------------- rendering


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Clip to [0, 1] and quantize to 8 bits."""
    return np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)


def _rng(config: SyntheticConfig, category: str, split: Split, defect: str,
         index: int) -> np.random.Generator:
    """An independent random stream per image (names hashed stably with CRC-32)."""
    key = [config.seed, zlib.crc32(category.encode()), _SPLIT_CODES[split],
           zlib.crc32(defect.encode()), index]
    return np.random.default_rng(key)


def render_synthetic(category: str, split: Split | str, defect: str, index: int,
                     config: SyntheticConfig | None = None) -> SyntheticImage:
    """Render one synthetic image.

    Args:
        category: one of :data:`SYNTHETIC_CATEGORIES`.
        split: ``train`` or ``test`` (independent random streams).
        defect: ``"good"`` or one of the category's :data:`SYNTHETIC_DEFECTS`.
        index: the image's number.
        config: image size and seed.

    Returns:
        The image, its mask, and the image without its defect.

    Raises:
        ValueError: an unknown category, or a defect the category does not have.

    Example:
        >>> sample = render_synthetic("grass", "test", "stain", 0)
        >>> sample.image.shape, bool(sample.mask.any())
        ((128, 128, 3), True)
    """
    _check_category(category)
    config = config or SyntheticConfig()
    allowed = [GOOD] + [d.value for d in SYNTHETIC_DEFECTS[category]]
    if defect not in allowed:
        raise ValueError(f"category {category!r} has no defect {defect!r}; choose from {allowed}")
    size = config.image_size
    rng = _rng(config, category, Split(split), defect, index)
    scene = make_scene(category, size, rng)
    noise = rng.normal(0, SENSOR_NOISE, scene.image.shape).astype(np.float32)
    normal = _to_uint8(scene.image + noise)
    if defect == GOOD:
        return SyntheticImage(normal, np.zeros((size, size), dtype=bool), normal)
    scale = size / _REFERENCE_SIZE
    min_pixels = max(8, _MIN_DEFECT_FRACTION * size * size)
    for _ in range(_MAX_DRAWS):
        drawn = DRAWERS[Defect(defect)](scene, rng, scale, category)
        change = drawn.opacity[..., None] * (drawn.appearance - scene.image)
        blended = scene.image + change.astype(np.float32)  # float32 as the normal image
        mask = drawn.opacity > 0  # outside it, blended == scene.image exactly
        if mask.sum() >= min_pixels:
            return SyntheticImage(_to_uint8(blended + noise), mask, normal)
    raise RuntimeError(f"could not draw a {defect} on {category} in {_MAX_DRAWS} tries")


def synthetic_index(category: str, split: Split | str,
                    config: SyntheticConfig | None = None) -> list[tuple[str, int]]:
    """The ``(defect, index)`` pairs of a category's split, in the order a folder lists them.

    Normal images first, then the defect types sorted by name.

    Example:
        >>> config = SyntheticConfig(num_test_good=1, num_test_per_defect=1)
        >>> synthetic_index("nut", "test", config)
        [('good', 0), ('missing', 0), ('scratch', 0), ('stain', 0)]
    """
    _check_category(category)
    config = config or SyntheticConfig()
    if Split(split) is Split.TRAIN:
        return [(GOOD, i) for i in range(config.num_train)]
    return [(GOOD, i) for i in range(config.num_test_good)] + [
        (defect, i)
        for defect in sorted(d.value for d in SYNTHETIC_DEFECTS[category])
        for i in range(config.num_test_per_defect)
    ]


def _relative_path(category: str, split: Split, defect: str, index: int) -> str:
    """Where the MVTec layout puts an image (``<cat>/<split>/<defect>/<index>.png``)."""
    return f"{category}/{split.value}/{defect}/{index:03d}.png"


class SyntheticDataset(Dataset[Item]):
    """Synthetic images rendered in memory, item for item what :func:`write_synthetic` writes
    and :class:`~flowkit.models.data.FolderDataset` reads back.

    Args:
        category: one of :data:`SYNTHETIC_CATEGORIES`.
        split: ``train`` or ``test``.
        image_size: side of the rendered images.
        num_train: normal training images.
        num_test_good: normal test images.
        num_test_per_defect: test images per defect type.
        seed: the random seed.
        transform: applied to ``(image, mask)``, e.g. texture augmentation.

    Example:
        >>> dataset = SyntheticDataset("nut", "test", image_size=64, num_test_per_defect=2)
        >>> len(dataset), dataset[-1].defect, dataset[-1].path
        (18, 'stain', 'nut/test/stain/001.png')
    """

    def __init__(
        self,
        category: str,
        split: Split | str = Split.TRAIN,
        image_size: int = DEFAULT_IMAGE_SIZE,
        num_train: int = SyntheticConfig.num_train,
        num_test_good: int = SyntheticConfig.num_test_good,
        num_test_per_defect: int = SyntheticConfig.num_test_per_defect,
        seed: int = 0,
        transform: PairTransform | None = None,
    ) -> None:
        self.category = category
        self.split = Split(split)
        self.config = SyntheticConfig(image_size, num_train, num_test_good, num_test_per_defect,
                                      seed)
        self.transform = transform
        self.index = synthetic_index(category, self.split, self.config)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, position: int) -> Item:
        defect, index = self.index[position]
        sample = render_synthetic(self.category, self.split, defect, index, self.config)
        mask = sample.mask if defect != GOOD else None
        path = _relative_path(self.category, self.split, defect, index)
        item = make_item(img_as_float32(sample.image), mask, defect, path, size=None)
        if self.transform is not None:
            image, mask_t = self.transform(item.image, item.mask)
            item = item._replace(image=image, mask=mask_t)
        return item


def write_synthetic(
    out_dir: str | Path,
    categories: tuple[str, ...] | list[str] = SYNTHETIC_CATEGORIES,
    image_size: int = DEFAULT_IMAGE_SIZE,
    num_train: int = SyntheticConfig.num_train,
    num_test_good: int = SyntheticConfig.num_test_good,
    num_test_per_defect: int = SyntheticConfig.num_test_per_defect,
    seed: int = 0,
) -> Path:
    """Write synthetic categories to disk in the MVTec-AD layout.

    ``<cat>/train/good/000.png``, ``<cat>/test/good/000.png``, ``<cat>/test/<defect>/000.png``
    and ``<cat>/ground_truth/<defect>/000_mask.png`` (0/255).

    Args:
        out_dir: the dataset root; created when missing.
        categories: which of :data:`SYNTHETIC_CATEGORIES` to write.
        image_size: side of the square images.
        num_train: normal training images per category.
        num_test_good: normal test images per category.
        num_test_per_defect: test images per defect type and category.
        seed: the random seed.

    Returns:
        ``out_dir`` as a ``Path``.

    Raises:
        ValueError: an unknown category or invalid sizes.
    """
    config = SyntheticConfig(image_size, num_train, num_test_good, num_test_per_defect, seed)
    for category in categories:
        _check_category(category)
    out_dir = Path(out_dir)
    for category in categories:
        for split in Split:
            for defect, index in synthetic_index(category, split, config):
                sample = render_synthetic(category, split, defect, index, config)
                write_png(out_dir / _relative_path(category, split, defect, index), sample.image)
                if defect != GOOD:
                    mask_name = f"{index:03d}_mask.png"
                    write_png(out_dir / category / GROUND_TRUTH_DIR / defect / mask_name,
                              sample.mask)
    return out_dir
