"""A procedural printed circuit board: the synthetic ``pcb`` object, drawn at any size.

A green board carries a chip with pins, resistors, capacitors and an LED at fixed places
(the 'golden' design), each placed with a tiny jitter as by a pick-and-place machine. A
:class:`Board` holds the pose of the board and of every part, so a defect can draw the same
board with one part moved, removed or added, or the whole board moved, and compare.
Lengths are fractions of the image side; the board's and each part's surface grain moves
with it (sampled in its own coordinates), so a moved piece changes every pixel it covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import skimage.data
from scipy.ndimage import map_coordinates
from skimage.util import img_as_float32

__all__ = ["BOARD_HALF", "Board", "Part", "part_catalogue", "random_board"]

BOARD_HALF = (0.30, 0.38)
"""Half height and half width of the board, in fractions of the image side."""

_BOARD_SHIFT = 0.006  # std of the board's placement, fraction of the side
_BOARD_TILT_DEG = 0.8
_PART_SHIFT = 0.0015  # std of each part's placement, fraction of the side
_PART_TILT_DEG = 0.6
_GAIN_JITTER = 0.03
_BOARD_COLOR = np.array([0.10, 0.36, 0.18], dtype=np.float32)
_BACKGROUND = np.array([0.80, 0.80, 0.78], dtype=np.float32)
_GRAIN = 0.10  # contrast of the parts' surface grain
_BOARD_GRAIN = 0.35  # contrast of the board's (glass-fibre) grain
_GRAIN_PIXELS = 300  # grain photo pixels per unit of image side


@dataclass(frozen=True)
class Part:
    """A component: a rectangle (or disc) in board coordinates.

    Attributes:
        center: ``(y, x)`` on the board, fractions of the image side from the board's centre.
        half: ``(half height, half width)``; a disc uses ``half[0]`` as its radius.
        angle: rotation on the board, radians.
        color: ``[3]`` body colour.
        disc: round instead of rectangular.
        pins: ``(rows, half length)``: metal pins along the long sides, or ``(0, 0)``.
    """

    center: tuple[float, float]
    half: tuple[float, float]
    angle: float
    color: tuple[float, float, float]
    disc: bool = False
    pins: tuple[int, float] = (0, 0.0)


_DESIGN = (
    Part((-0.03, -0.02), (0.075, 0.105), 0.0, (0.09, 0.09, 0.10), pins=(5, 0.028)),  # the chip
    Part((0.17, -0.23), (0.022, 0.055), 0.0, (0.80, 0.70, 0.52)),  # resistor
    Part((0.17, 0.20), (0.022, 0.055), 0.0, (0.80, 0.70, 0.52)),  # resistor
    Part((-0.15, -0.27), (0.050, 0.050), 0.0, (0.74, 0.76, 0.80), disc=True),  # capacitor
    Part((-0.17, 0.24), (0.028, 0.040), 0.0, (0.62, 0.46, 0.22)),  # ceramic capacitor
    Part((0.18, -0.01), (0.026, 0.026), 0.0, (0.85, 0.12, 0.10)),  # LED
)

_EXTRA_PARTS = (
    Part((0, 0), (0.016, 0.032), 0.0, (0.80, 0.70, 0.52)),  # a small resistor
    Part((0, 0), (0.018, 0.018), 0.0, (0.82, 0.82, 0.84), disc=True),  # a solder ball
    Part((0, 0), (0.020, 0.028), 0.0, (0.62, 0.46, 0.22)),  # a small capacitor
)


def part_catalogue() -> tuple[Part, ...]:
    """Small parts a defect may add to the board (centred at the origin)."""
    return _EXTRA_PARTS


@lru_cache(maxsize=1)
def _grain_photo() -> np.ndarray:
    """A grayscale photograph bundled with scikit-image, as a surface grain, mean 0."""
    photo = img_as_float32(skimage.data.gravel())
    return photo - photo.mean()


def _local(yy: np.ndarray, xx: np.ndarray, center: tuple[float, float],
           angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates relative to ``center``, rotated by ``-angle``."""
    dy, dx = yy - center[0], xx - center[1]
    cos, sin = math.cos(angle), math.sin(angle)
    return -dx * sin + dy * cos, dx * cos + dy * sin


def _box(v: np.ndarray, u: np.ndarray, half: tuple[float, float], pixel: float) -> np.ndarray:
    """Anti-aliased coverage of a rectangle: linear across one pixel at its edges."""
    return (np.clip((half[0] - np.abs(v)) / pixel + 0.5, 0, 1)
            * np.clip((half[1] - np.abs(u)) / pixel + 0.5, 0, 1))


def _grain(v: np.ndarray, u: np.ndarray, offset: float) -> np.ndarray:
    """The grain photo sampled at local coordinates (it moves with the piece)."""
    photo = _grain_photo()
    rows = (v * _GRAIN_PIXELS + offset) % photo.shape[0]
    cols = (u * _GRAIN_PIXELS + offset) % photo.shape[1]
    return map_coordinates(photo, [rows, cols], order=1, mode="grid-wrap")


@dataclass(frozen=True)
class Board:
    """A board and its parts, posed.

    Attributes:
        center: ``(y, x)`` of the board's centre, fractions of the image side.
        angle: the board's rotation, radians.
        parts: the mounted parts.
        gain: overall brightness factor.
    """

    center: tuple[float, float]
    angle: float
    parts: tuple[Part, ...]
    gain: float

    def _coords(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """Board coordinates of the pixel centres, fractions of the image side."""
        yy, xx = (np.mgrid[:size, :size].astype(np.float64) + 0.5) / size
        return _local(yy, xx, self.center, self.angle)

    def part_coverage(self, part: Part, size: int) -> np.ndarray:
        """``[size, size]`` coverage in [0, 1] of ``part`` (body and pins)."""
        return self._part_layers(part, *self._coords(size), 1 / size)[0]

    def _part_layers(self, part: Part, bv: np.ndarray, bu: np.ndarray,
                     pixel: float) -> tuple[np.ndarray, np.ndarray]:
        """A part's coverage and colour ``[size, size, 3]`` at board coordinates."""
        v, u = _local(bv, bu, part.center, part.angle)
        if part.disc:
            body = np.clip((part.half[0] - np.hypot(v, u)) / pixel + 0.5, 0, 1)
        else:
            body = _box(v, u, part.half, pixel)
        light = 1 - 0.5 * (v + u) / (part.half[0] + part.half[1])  # lit from the top left
        shade = (0.9 + 0.08 * light + _GRAIN * _grain(v, u, 17.0 * part.center[1]))[..., None]
        color = np.asarray(part.color, dtype=np.float32) * shade
        rows, length = part.pins
        pins = np.zeros_like(body)
        if rows:  # pins out of both long sides, evenly spaced
            pitch = 2 * part.half[1] / rows
            slot = (u + part.half[1]) / pitch
            along = (slot - np.floor(slot) - 0.5) * pitch
            inside = (slot >= 0) & (slot < rows)
            beyond = np.abs(v) - part.half[0] - length / 2
            pins = np.where(inside, _box(beyond, along, (length / 2, pitch / 4), pixel), 0)
        metal = np.array([0.78, 0.78, 0.80], dtype=np.float32) * shade
        coverage = np.maximum(body, pins)
        mixed = np.where((body >= pins)[..., None], color, metal)
        return coverage, mixed

    def board_coverage(self, size: int) -> np.ndarray:
        """``[size, size]`` coverage in [0, 1] of the board."""
        return _box(*self._coords(size), BOARD_HALF, 1 / size)

    def background(self, size: int) -> np.ndarray:
        """The table under the board, ``[size, size, 3]``: a light surface with a vignette."""
        yy, xx = (np.mgrid[:size, :size].astype(np.float32) + 0.5) / size - 0.5
        return (_BACKGROUND * (1 - 0.3 * (yy**2 + xx**2))[..., None]).astype(np.float32)

    def render(self, size: int) -> np.ndarray:
        """The image, ``[size, size, 3]`` float32 in [0, 1], noise-free."""
        bv, bu = self._coords(size)
        pixel = 1 / size
        board = _box(bv, bu, BOARD_HALF, pixel)[..., None]
        shade = 0.95 + _BOARD_GRAIN * _grain(bv, bu, 3.0)
        image = self.background(size) * (1 - board) + (_BOARD_COLOR * shade[..., None]) * board
        for part in self.parts:
            coverage, color = self._part_layers(part, bv, bu, pixel)
            image = image * (1 - coverage[..., None]) + color * coverage[..., None]
        return np.clip(image * self.gain, 0, 1).astype(np.float32)

    def moved(self, shift: tuple[float, float] = (0.0, 0.0), turn: float = 0.0) -> Board:
        """The whole board shifted by ``shift`` (fractions of the side) and turned."""
        center = (self.center[0] + shift[0], self.center[1] + shift[1])
        return replace(self, center=center, angle=self.angle + turn)

    def with_parts(self, parts: tuple[Part, ...]) -> Board:
        """The same board carrying ``parts`` instead."""
        return replace(self, parts=parts)


def random_board(rng: np.random.Generator) -> Board:
    """A normal board: the golden design, the board and every part placed with small jitter."""
    center = tuple(0.5 + rng.normal(0, _BOARD_SHIFT, 2))
    parts = tuple(
        replace(part, center=tuple(np.add(part.center, rng.normal(0, _PART_SHIFT, 2))),
                angle=part.angle + math.radians(rng.normal(0, _PART_TILT_DEG)))
        for part in _DESIGN
    )
    return Board(center, math.radians(rng.normal(0, _BOARD_TILT_DEG)), parts,
                 rng.uniform(1 - _GAIN_JITTER, 1 + _GAIN_JITTER))
