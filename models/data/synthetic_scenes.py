"""The normal images of the synthetic dataset: coloured crops of texture photographs
scikit-image ships, a rendered hexagonal nut, a procedural woven fabric, brushed steel and
a circuit board."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import skimage.data
from skimage.transform import resize
from skimage.util import img_as_float32

from .synthetic_board import Board, random_board
from .synthetic_brushed import Brushed, random_brushed
from .synthetic_weave import Weave, random_weave

__all__ = [
    "NUT_APOTHEM",
    "PHOTO_TEXTURES",
    "SENSOR_NOISE",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DETAIL",
    "SYNTHETIC_OBJECTS",
    "SYNTHETIC_TEXTURES",
    "Scene",
    "grid",
    "make_scene",
    "texture",
]

PHOTO_TEXTURES = ("brick", "grass", "gravel")
"""Texture categories cut from photographs, named after the ``skimage.data`` images."""

SYNTHETIC_TEXTURES = PHOTO_TEXTURES + ("fabric", "steel")
"""Texture categories: the photographs, a procedural plain weave and brushed steel (these two
drawn at any size)."""

SYNTHETIC_OBJECTS = ("nut", "pcb")
"""Aligned-object categories, rendered: a hexagonal nut and a circuit board with parts."""

SYNTHETIC_CATEGORIES = SYNTHETIC_TEXTURES + SYNTHETIC_OBJECTS

# Texture colouring: the grayscale photograph is mapped linearly from a dark to a light colour.
_PALETTES = {
    "brick": ((0.28, 0.10, 0.07), (0.92, 0.62, 0.48)),
    "grass": ((0.04, 0.13, 0.02), (0.62, 0.85, 0.33)),
    "gravel": ((0.16, 0.15, 0.13), (0.86, 0.82, 0.74)),
}
SYNTHETIC_DETAIL = 256
"""Texture pixels per image side cut from the photographs: larger synthetic images are
upsampled from fewer pixels (the other categories are drawn at any size)."""
_CROP_JITTER = 0.1  # relative scale jitter of the crop
_BRIGHTNESS_JITTER = 0.04
SENSOR_NOISE = 0.012
"""Standard deviation of the Gaussian noise on every image (of [0, 1] values)."""

# The nut, in fractions of the image side.
NUT_APOTHEM = 0.33
_NUT_HOLE = 0.13
_NUT_CHAMFER = 0.19
_NUT_SHIFT = 0.012
_NUT_TILT_DEG = 2.5
_NUT_METAL = np.array([0.60, 0.62, 0.66], dtype=np.float32)
_NUT_BACKGROUND = np.array([0.13, 0.13, 0.14], dtype=np.float32)


@lru_cache(maxsize=len(PHOTO_TEXTURES))
def _photo(name: str) -> np.ndarray:
    """A grayscale texture photograph bundled with scikit-image (no download), in [0, 1]."""
    return img_as_float32(getattr(skimage.data, name)())


def texture(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A coloured random crop of texture ``name``, ``[size, size, 3]`` float32, noise-free."""
    photo = _photo(name)
    crop = round(SYNTHETIC_DETAIL * rng.uniform(1 - _CROP_JITTER, 1 + _CROP_JITTER))
    top, left = rng.integers(0, np.array(photo.shape) - crop + 1)
    gray = resize(photo[top:top + crop, left:left + crop], (size, size), order=1,
                  anti_aliasing=True)
    gain = rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER)
    gray = np.clip(gray * gain + rng.uniform(-_BRIGHTNESS_JITTER, _BRIGHTNESS_JITTER), 0, 1)
    dark, light = (np.array(c, dtype=np.float32) for c in _PALETTES[name])
    return (dark + (light - dark) * gray[..., None]).astype(np.float32)


class Scene(NamedTuple):
    """A normal image with what defects need to know about it."""

    image: np.ndarray  # [S, S, 3] float32
    surface: np.ndarray  # [S, S] bool: where defects may be drawn
    background: np.ndarray  # [S, S, 3]: what shows where the object is missing
    layout: Weave | Brushed | Board | None = None  # a procedural scene's parameters, to redraw it


def _texturescene(category: str, size: int, rng: np.random.Generator) -> Scene:
    """A texture crop: defects may go anywhere."""
    image = texture(category, size, rng)
    return Scene(image, np.ones((size, size), dtype=bool), image)


def grid(size: int, center: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(y, x)`` relative to ``center``."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    return yy - center[0], xx - center[1]


def _nutscene(size: int, rng: np.random.Generator) -> Scene:
    """A hexagonal nut, centred up to a small shift and tilt, lit from the top left."""
    center = (size - 1) / 2 + rng.normal(0, _NUT_SHIFT * size, 2)
    dy, dx = grid(size, center)
    radius = np.hypot(dy, dx)
    tilt = math.radians(rng.normal(0, _NUT_TILT_DEG))
    normals = [tilt + k * math.pi / 3 for k in range(6)]
    edge_distance = np.max([dx * math.cos(a) + dy * math.sin(a) for a in normals], axis=0)
    # Anti-aliased coverage: 1 inside, 0 outside, linear across one pixel.
    outer = np.clip(NUT_APOTHEM * size - edge_distance + 0.5, 0, 1)
    inner = np.clip(radius - _NUT_HOLE * size + 0.5, 0, 1)
    coverage = (outer * inner)[..., None]

    vignette = 1 - 0.35 * (radius / size) ** 2
    background = _NUT_BACKGROUND * vignette[..., None]
    background = background + rng.normal(0, SENSOR_NOISE / 2, background.shape)

    light = -(dx + dy) / (math.sqrt(2) * NUT_APOTHEM * size)  # +1 toward the top left
    chamfer = np.clip((_NUT_CHAMFER * size - radius) / ((_NUT_CHAMFER - _NUT_HOLE) * size), 0, 1)
    photo = _photo("gravel")
    missing = max(0, size - photo.shape[0])
    grain = np.pad(photo, (0, missing), mode="wrap")[:size, :size] - 0.5  # the metal's grain
    shade = 0.88 + 0.18 * light - 0.25 * chamfer * light + 0.12 * grain
    metal = _NUT_METAL * shade[..., None] * rng.uniform(0.96, 1.04)
    image = background * (1 - coverage) + metal * coverage
    return Scene(image.astype(np.float32), coverage[..., 0] > 0.5, background)


def _proceduralscene(layout: Weave | Brushed, size: int) -> Scene:
    """A procedural texture: defects may go anywhere."""
    image = layout.render(size)
    return Scene(image, np.ones((size, size), dtype=bool), image, layout)


def _pcbscene(size: int, rng: np.random.Generator) -> Scene:
    """A circuit board: defects go on the board."""
    board = random_board(rng)
    return Scene(board.render(size), board.board_coverage(size) > 0.5, board.background(size),
                 board)


def make_scene(category: str, size: int, rng: np.random.Generator) -> Scene:
    """The normal image of ``category``."""
    if category == "nut":
        return _nutscene(size, rng)
    if category == "pcb":
        return _pcbscene(size, rng)
    if category == "fabric":
        return _proceduralscene(random_weave(size, rng), size)
    if category == "steel":
        return _proceduralscene(random_brushed(size, rng), size)
    return _texturescene(category, size, rng)
