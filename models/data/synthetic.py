"""A built-in synthetic defect dataset from textures scikit-image ships: the zero-download default.

Categories are three textures (``brick``, ``grass``, ``gravel``: crops of the photographs in
``skimage.data``, coloured) and one aligned object (``nut``: a rendered hexagonal nut). Normal
images vary by crop, scale, brightness and sensor noise (textures) or by a small shift and
rotation (the nut). Defects are drawn onto a normal image with a soft-edged opacity that is
zero outside the defect, so the mask is pixel-exact: a pixel is in the mask exactly when the
defect changed it. Everything is a deterministic function of the seed.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import skimage.data
from scipy.ndimage import distance_transform_edt
from skimage.draw import line
from skimage.morphology import dilation, disk
from skimage.transform import resize
from skimage.util import img_as_float32
from torch.utils.data import Dataset

from ...kernels.choice import Choice
from .folder import PairTransform
from .image_io import write_png
from .item import GOOD, Item, Split, make_item
from .layouts import GROUND_TRUTH_DIR

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

SYNTHETIC_TEXTURES = ("brick", "grass", "gravel")
"""Texture categories, named after the ``skimage.data`` images they are cut from."""

SYNTHETIC_OBJECTS = ("nut",)
"""Aligned-object categories, rendered."""

SYNTHETIC_CATEGORIES = SYNTHETIC_TEXTURES + SYNTHETIC_OBJECTS

DEFAULT_IMAGE_SIZE = 128
"""Small enough to train PyramidFlow on a CPU in minutes; the pyramid splits it 3 times."""


class Defect(Choice):
    """Synthetic defect types."""

    SCRATCH = "scratch"  # a thin curved line, brighter or darker than the surface
    STAIN = "stain"  # a blob of colour shift with a blurred edge
    HOLE = "hole"  # a dark irregular region with a soft rim
    PATCH = "patch"  # a piece of another texture
    MISSING = "missing"  # a piece of the object broken off, showing the background


SYNTHETIC_DEFECTS: dict[str, tuple[Defect, ...]] = {
    **{name: (Defect.SCRATCH, Defect.STAIN, Defect.HOLE, Defect.PATCH)
       for name in SYNTHETIC_TEXTURES},
    "nut": (Defect.SCRATCH, Defect.STAIN, Defect.MISSING),
}
"""The defect types of each category."""

# Texture colouring: the grayscale photograph is mapped linearly from a dark to a light colour.
_PALETTES = {
    "brick": ((0.28, 0.10, 0.07), (0.92, 0.62, 0.48)),
    "grass": ((0.04, 0.13, 0.02), (0.62, 0.85, 0.33)),
    "gravel": ((0.16, 0.15, 0.13), (0.86, 0.82, 0.74)),
}
_STAIN_COLORS = (  # rust, oil, grime, water, paint-like blue
    (0.62, 0.30, 0.10),
    (0.10, 0.08, 0.06),
    (0.40, 0.37, 0.20),
    (0.22, 0.28, 0.36),
    (0.20, 0.30, 0.70),
)
_SOURCE_CROP = 256  # texture pixels per image side, before resizing
_CROP_JITTER = 0.1  # relative scale jitter of the crop
_BRIGHTNESS_JITTER = 0.04
_SENSOR_NOISE = 0.012
_REFERENCE_SIZE = 128  # geometric constants below are in pixels at this image size
_MIN_DEFECT_FRACTION = 0.0015  # of the image area; smaller draws are redrawn
_MAX_DRAWS = 50
_SPLIT_CODES = {Split.TRAIN: 1, Split.TEST: 2}

# The nut, in fractions of the image side.
_NUT_APOTHEM = 0.33
_NUT_HOLE = 0.13
_NUT_CHAMFER = 0.19
_NUT_SHIFT = 0.012
_NUT_TILT_DEG = 2.5
_NUT_METAL = np.array([0.60, 0.62, 0.66], dtype=np.float32)
_NUT_BACKGROUND = np.array([0.13, 0.13, 0.14], dtype=np.float32)


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


# ---------------------------------------------------------------- normal images


@lru_cache(maxsize=len(SYNTHETIC_TEXTURES))
def _photo(name: str) -> np.ndarray:
    """A grayscale texture photograph bundled with scikit-image (no download), in [0, 1]."""
    return img_as_float32(getattr(skimage.data, name)())


def _texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A coloured random crop of texture ``name``, ``[size, size, 3]`` float32, noise-free."""
    photo = _photo(name)
    crop = round(_SOURCE_CROP * rng.uniform(1 - _CROP_JITTER, 1 + _CROP_JITTER))
    top, left = rng.integers(0, np.array(photo.shape) - crop + 1)
    gray = resize(photo[top:top + crop, left:left + crop], (size, size), order=1,
                  anti_aliasing=True)
    gain = rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER)
    gray = np.clip(gray * gain + rng.uniform(-_BRIGHTNESS_JITTER, _BRIGHTNESS_JITTER), 0, 1)
    dark, light = (np.array(c, dtype=np.float32) for c in _PALETTES[name])
    return (dark + (light - dark) * gray[..., None]).astype(np.float32)


class _Scene(NamedTuple):
    """A normal image with what defects need to know about it."""

    image: np.ndarray  # [S, S, 3] float32
    surface: np.ndarray  # [S, S] bool: where defects may be drawn
    background: np.ndarray  # [S, S, 3]: what shows where the object is missing


def _texture_scene(category: str, size: int, rng: np.random.Generator) -> _Scene:
    """A texture crop: defects may go anywhere."""
    image = _texture(category, size, rng)
    return _Scene(image, np.ones((size, size), dtype=bool), image)


def _grid(size: int, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` relative to ``center``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    return yy - center[0], xx - center[1]


def _nut_scene(size: int, rng: np.random.Generator) -> _Scene:
    """A hexagonal nut, centred up to a small shift and tilt, lit from the top left."""
    center = (size - 1) / 2 + rng.normal(0, _NUT_SHIFT * size, 2)
    dy, dx = _grid(size, center)
    radius = np.hypot(dy, dx)
    tilt = math.radians(rng.normal(0, _NUT_TILT_DEG))
    normals = [tilt + k * math.pi / 3 for k in range(6)]
    edge_distance = np.max([dx * math.cos(a) + dy * math.sin(a) for a in normals], axis=0)
    # Anti-aliased coverage: 1 inside, 0 outside, linear across one pixel.
    outer = np.clip(_NUT_APOTHEM * size - edge_distance + 0.5, 0, 1)
    inner = np.clip(radius - _NUT_HOLE * size + 0.5, 0, 1)
    coverage = (outer * inner)[..., None]

    vignette = 1 - 0.35 * (radius / size) ** 2
    background = _NUT_BACKGROUND * vignette[..., None]
    background = background + rng.normal(0, _SENSOR_NOISE / 2, background.shape)

    light = -(dx + dy) / (math.sqrt(2) * _NUT_APOTHEM * size)  # +1 toward the top left
    chamfer = np.clip((_NUT_CHAMFER * size - radius) / ((_NUT_CHAMFER - _NUT_HOLE) * size), 0, 1)
    photo = _photo("gravel")
    missing = max(0, size - photo.shape[0])
    grain = np.pad(photo, (0, missing), mode="wrap")[:size, :size] - 0.5  # the metal's grain
    shade = 0.88 + 0.18 * light - 0.25 * chamfer * light + 0.12 * grain
    metal = _NUT_METAL * shade[..., None] * rng.uniform(0.96, 1.04)
    image = background * (1 - coverage) + metal * coverage
    return _Scene(image.astype(np.float32), coverage[..., 0] > 0.5, background)


def _scene(category: str, size: int, rng: np.random.Generator) -> _Scene:
    """The normal image of ``category``."""
    if category in SYNTHETIC_OBJECTS:
        return _nut_scene(size, rng)
    return _texture_scene(category, size, rng)


# ---------------------------------------------------------------- defect shapes


def _blob(size: int, rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """An irregular star-shaped region: an ellipse with a random wavy outline."""
    dy, dx = _grid(size, center)
    angle = rng.uniform(0, math.pi)
    stretch = rng.uniform(0.6, 1.0)
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = (-dx * math.sin(angle) + dy * math.cos(angle)) / stretch
    theta = np.arctan2(v, u)
    outline = np.ones_like(theta)
    for k in range(2, 6):
        outline += rng.uniform(0, 0.25) / k * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return np.hypot(u, v) <= radius * outline


def _curve(size: int, rng: np.random.Generator, start: np.ndarray, scale: float) -> np.ndarray:
    """A thin curved line from ``start``: a cubic Bezier curve, 1 to 3 pixels wide at 128 px."""
    heading = rng.uniform(0, 2 * math.pi)
    length = rng.uniform(0.25, 0.6) * size
    along = np.array([math.sin(heading), math.cos(heading)])
    across = np.array([along[1], -along[0]])
    controls = [start + along * length * t + across * rng.normal(0, 0.15) * length
                for t in (0, 1 / 3, 2 / 3, 1)]
    steps = np.linspace(0, 1, int(4 * length))[:, None]
    points = sum(
        math.comb(3, k) * steps**k * (1 - steps) ** (3 - k) * controls[k] for k in range(4)
    )
    region = np.zeros((size, size), dtype=bool)
    points = np.clip(np.round(points).astype(int), 0, size - 1)
    for (r0, c0), (r1, c1) in zip(points[:-1], points[1:], strict=True):
        region[line(r0, c0, r1, c1)] = True
    half_width = round(rng.uniform(0, 1.2) * scale)
    return dilation(region, disk(half_width)) if half_width else region


def _opacity(region: np.ndarray, feather: float, floor: float) -> np.ndarray:
    """Opacity ``[S, S]``: 0 outside ``region``, from ``floor`` at its edge up to 1 inside."""
    depth = distance_transform_edt(region)  # 1 on the edge pixels
    return np.where(region, floor + (1 - floor) * np.clip(depth / feather, 0, 1), 0.0)


# ---------------------------------------------------------------- defects


class _Drawn(NamedTuple):
    """A defect as an opacity map and the appearance it blends in."""

    opacity: np.ndarray  # [S, S] in [0, 1], zero exactly outside the mask
    appearance: np.ndarray  # [S, S, 3]


def _random_center(scene: _Scene, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random surface pixel at least ``margin`` pixels from the image border."""
    size = scene.surface.shape[0]
    inner = np.zeros_like(scene.surface)
    lo, hi = int(margin), int(size - margin)
    inner[lo:hi, lo:hi] = scene.surface[lo:hi, lo:hi]
    candidates = np.argwhere(inner)
    return candidates[rng.integers(len(candidates))].astype(np.float32)


def _scratch(scene: _Scene, rng: np.random.Generator, scale: float, category: str) -> _Drawn:
    """A thin curve, lighter (exposed material) or darker (groove) than the surface."""
    start = _random_center(scene, rng, margin=0)
    region = _curve(scene.surface.shape[0], rng, start, scale) & scene.surface
    brighten = rng.random() < 0.5
    strength = rng.uniform(0.45, 0.75)
    image = scene.image
    appearance = image + (1 - image) * strength if brighten else image * (1 - strength)
    return _Drawn(_opacity(region, feather=1.5, floor=0.7), appearance)


def _stain(scene: _Scene, rng: np.random.Generator, scale: float, category: str) -> _Drawn:
    """A blob of coloured film with a blurred edge."""
    radius = rng.uniform(6, 16) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    region &= scene.surface
    color = np.asarray(_STAIN_COLORS[rng.integers(len(_STAIN_COLORS))], dtype=np.float32)
    luma = scene.image.mean(axis=-1, keepdims=True)
    # The surface's texture shows through a coloured film.
    strength = rng.uniform(0.5, 0.8)
    appearance = (1 - strength) * scene.image + strength * color * (0.5 + luma)
    return _Drawn(_opacity(region, feather=radius * 0.6, floor=0.4), appearance)


def _hole(scene: _Scene, rng: np.random.Generator, scale: float, category: str) -> _Drawn:
    """A dark irregular region, darkest in the middle, with a soft rim."""
    radius = rng.uniform(4, 11) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    depth = np.clip(distance_transform_edt(region) / radius, 0, 1)[..., None]
    darkness = rng.uniform(0.03, 0.1)
    # Darker toward the middle; the surface's own texture faintly visible in the rim.
    appearance = darkness * (1 + scene.image) * (1.6 - depth)
    return _Drawn(_opacity(region, feather=max(2.0, radius * 0.35), floor=0.55), appearance)


def _patch(scene: _Scene, rng: np.random.Generator, scale: float, category: str) -> _Drawn:
    """A piece of another texture, blob- or rectangle-shaped."""
    size = scene.surface.shape[0]
    other = [name for name in SYNTHETIC_TEXTURES if name != category]
    appearance = _texture(other[rng.integers(len(other))], size, rng)
    radius = rng.uniform(8, 18) * scale
    center = _random_center(scene, rng, radius)
    if rng.random() < 0.5:
        region = _blob(size, rng, center, radius)
    else:  # a rotated rectangle: a cut-and-glued piece
        dy, dx = _grid(size, center)
        angle = rng.uniform(0, math.pi)
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        region = (np.abs(u) <= radius) & (np.abs(v) <= radius * rng.uniform(0.4, 0.9))
    return _Drawn(_opacity(region & scene.surface, feather=1.5, floor=0.8), appearance)


def _missing(scene: _Scene, rng: np.random.Generator, scale: float, category: str) -> _Drawn:
    """A bite out of the object's outline, showing the background."""
    size = scene.surface.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    edge = (size - 1) / 2 + _NUT_APOTHEM * size * np.array([math.sin(angle), math.cos(angle)])
    region = _blob(size, rng, edge, rng.uniform(9, 18) * scale) & scene.surface
    return _Drawn(region.astype(np.float32), scene.background)


_DRAW: dict[Defect, Callable[[_Scene, np.random.Generator, float, str], _Drawn]] = {
    Defect.SCRATCH: _scratch,
    Defect.STAIN: _stain,
    Defect.HOLE: _hole,
    Defect.PATCH: _patch,
    Defect.MISSING: _missing,
}


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
    scene = _scene(category, size, rng)
    noise = rng.normal(0, _SENSOR_NOISE, scene.image.shape).astype(np.float32)
    normal = _to_uint8(scene.image + noise)
    if defect == GOOD:
        return SyntheticImage(normal, np.zeros((size, size), dtype=bool), normal)
    scale = size / _REFERENCE_SIZE
    min_pixels = max(8, _MIN_DEFECT_FRACTION * size * size)
    for _ in range(_MAX_DRAWS):
        drawn = _DRAW[Defect(defect)](scene, rng, scale, category)
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
