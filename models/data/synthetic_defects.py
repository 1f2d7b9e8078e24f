"""The defects of the synthetic dataset, drawn onto a normal image as a soft-edged opacity
that is zero exactly outside the defect, so that the mask is pixel-exact."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.draw import line
from skimage.morphology import dilation, disk

from ...kernels.choice import Choice
from .synthetic_scenes import NUT_APOTHEM, SYNTHETIC_TEXTURES, Scene, grid, texture

__all__ = ["DRAWERS", "SYNTHETIC_DEFECTS", "Defect", "Drawn"]


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

_STAIN_COLORS = (  # rust, oil, grime, water, paint-like blue
    (0.62, 0.30, 0.10),
    (0.10, 0.08, 0.06),
    (0.40, 0.37, 0.20),
    (0.22, 0.28, 0.36),
    (0.20, 0.30, 0.70),
)


def _blob(size: int, rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """An irregular star-shaped region: an ellipse with a random wavy outline."""
    dy, dx = grid(size, center)
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


class Drawn(NamedTuple):
    """A defect as an opacity map and the appearance it blends in."""

    opacity: np.ndarray  # [S, S] in [0, 1], zero exactly outside the mask
    appearance: np.ndarray  # [S, S, 3]


def _random_center(scene: Scene, rng: np.random.Generator, margin: float) -> np.ndarray:
    """A random surface pixel at least ``margin`` pixels from the image border."""
    size = scene.surface.shape[0]
    inner = np.zeros_like(scene.surface)
    lo, hi = int(margin), int(size - margin)
    inner[lo:hi, lo:hi] = scene.surface[lo:hi, lo:hi]
    candidates = np.argwhere(inner)
    return candidates[rng.integers(len(candidates))].astype(np.float32)


def _scratch(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A thin curve, lighter (exposed material) or darker (groove) than the surface."""
    start = _random_center(scene, rng, margin=0)
    region = _curve(scene.surface.shape[0], rng, start, scale) & scene.surface
    brighten = rng.random() < 0.5
    strength = rng.uniform(0.45, 0.75)
    image = scene.image
    appearance = image + (1 - image) * strength if brighten else image * (1 - strength)
    return Drawn(_opacity(region, feather=1.5, floor=0.7), appearance)


def _stain(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A blob of coloured film with a blurred edge."""
    radius = rng.uniform(6, 16) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    region &= scene.surface
    color = np.asarray(_STAIN_COLORS[rng.integers(len(_STAIN_COLORS))], dtype=np.float32)
    luma = scene.image.mean(axis=-1, keepdims=True)
    # The surface's texture shows through a coloured film.
    strength = rng.uniform(0.5, 0.8)
    appearance = (1 - strength) * scene.image + strength * color * (0.5 + luma)
    return Drawn(_opacity(region, feather=radius * 0.6, floor=0.4), appearance)


def _hole(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A dark irregular region, darkest in the middle, with a soft rim."""
    radius = rng.uniform(4, 11) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    depth = np.clip(distance_transform_edt(region) / radius, 0, 1)[..., None]
    darkness = rng.uniform(0.03, 0.1)
    # Darker toward the middle; the surface's own texture faintly visible in the rim.
    appearance = darkness * (1 + scene.image) * (1.6 - depth)
    return Drawn(_opacity(region, feather=max(2.0, radius * 0.35), floor=0.55), appearance)


def _patch(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A piece of another texture, blob- or rectangle-shaped."""
    size = scene.surface.shape[0]
    other = [name for name in SYNTHETIC_TEXTURES if name != category]
    appearance = texture(other[rng.integers(len(other))], size, rng)
    radius = rng.uniform(8, 18) * scale
    center = _random_center(scene, rng, radius)
    if rng.random() < 0.5:
        region = _blob(size, rng, center, radius)
    else:  # a rotated rectangle: a cut-and-glued piece
        dy, dx = grid(size, center)
        angle = rng.uniform(0, math.pi)
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        region = (np.abs(u) <= radius) & (np.abs(v) <= radius * rng.uniform(0.4, 0.9))
    return Drawn(_opacity(region & scene.surface, feather=1.5, floor=0.8), appearance)


def _missing(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A bite out of the object's outline, showing the background."""
    size = scene.surface.shape[0]
    angle = rng.uniform(0, 2 * math.pi)
    edge = (size - 1) / 2 + NUT_APOTHEM * size * np.array([math.sin(angle), math.cos(angle)])
    region = _blob(size, rng, edge, rng.uniform(9, 18) * scale) & scene.surface
    return Drawn(region.astype(np.float32), scene.background)


DRAWERS: dict[Defect, Callable[[Scene, np.random.Generator, float, str], Drawn]] = {
    Defect.SCRATCH: _scratch,
    Defect.STAIN: _stain,
    Defect.HOLE: _hole,
    Defect.PATCH: _patch,
    Defect.MISSING: _missing,
}
"""How each defect type is drawn: ``(scene, rng, scale, category) -> Drawn``, ``scale`` the
image size over 128 px."""
