"""The defects of the synthetic dataset, drawn onto a normal image as a soft-edged opacity
that is zero exactly outside the defect, so that the mask is pixel-exact.

The ``fabric`` and ``pcb`` categories carry the subtle kinds: faint stains and hairline
scratches (a small intensity change), a patch of the same cloth woven at another pitch or angle
(same colours and brightness: only the structure differs), and parts of the board moved,
missing or added, or the whole board moved. For a moved piece the mask is the union of where
it was and where it is (every pixel the move changed); for the whole board moved it is the
union of the board's two footprints.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from scipy.ndimage import distance_transform_edt
from skimage.draw import line
from skimage.morphology import dilation, disk

from ...kernels.choice import Choice
from .synthetic_board import BOARD_HALF, Board, part_catalogue
from .synthetic_brushed import Brushed
from .synthetic_scenes import NUT_APOTHEM, PHOTO_TEXTURES, Scene, grid, texture
from .synthetic_weave import Weave

__all__ = ["DRAWERS", "SYNTHETIC_DEFECTS", "Defect", "Drawn"]


class Defect(Choice):
    """Synthetic defect types."""

    SCRATCH = "scratch"  # a thin curved line, brighter or darker than the surface
    STAIN = "stain"  # a blob of colour shift with a blurred edge
    HOLE = "hole"  # a dark irregular region with a soft rim
    PATCH = "patch"  # a piece of another texture
    MISSING = "missing"  # a piece of the object broken off, or a part of it absent
    FAINT_STAIN = "faint_stain"  # a stain of low contrast (a few percent of intensity)
    HAIRLINE = "hairline"  # a scratch one pixel wide at any size, of low contrast
    WEAVE = "weave"  # a patch of the same cloth woven at another pitch or angle
    BRUSHING = "brushing"  # a patch of the same steel brushed in another way
    MISPLACED = "misplaced"  # a part moved or turned slightly on the object
    EXTRA = "extra"  # a small part where the design has none
    SHIFTED = "shifted"  # the whole object moved or turned beyond its normal placement


SYNTHETIC_DEFECTS: dict[str, tuple[Defect, ...]] = {
    **{name: (Defect.SCRATCH, Defect.STAIN, Defect.HOLE, Defect.PATCH)
       for name in PHOTO_TEXTURES},
    "fabric": (Defect.FAINT_STAIN, Defect.HAIRLINE, Defect.WEAVE),
    "steel": (Defect.FAINT_STAIN, Defect.HAIRLINE, Defect.BRUSHING),
    "nut": (Defect.SCRATCH, Defect.STAIN, Defect.MISSING),
    "pcb": (Defect.MISPLACED, Defect.MISSING, Defect.EXTRA, Defect.SHIFTED, Defect.HAIRLINE),
}
"""The defect types of each category."""

_MAX_PLACEMENTS = 20  # tries to find a free spot for an extra part
_FOOTPRINT = 0.25  # a pixel covered this much by a redrawn piece is in its mask
_LEAST_HALF_PIXELS = 1.8  # an extra part is at least twice this many pixels across

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


def _curve(size: int, rng: np.random.Generator, start: np.ndarray, scale: float,
           half_width: int | None = None) -> np.ndarray:
    """A thin curved line from ``start``: a cubic Bezier curve, 1 to 3 pixels wide at 128 px
    (``2 * half_width + 1`` pixels when given: ``0`` is a hairline at any size)."""
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
    if half_width is None:
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


def _film(scene: Scene, rng: np.random.Generator, scale: float,
          strengths: tuple[float, float]) -> Drawn:
    """A blob of coloured film with a blurred edge, of opacity drawn from ``strengths``."""
    radius = rng.uniform(6, 16) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    region &= scene.surface
    color = np.asarray(_STAIN_COLORS[rng.integers(len(_STAIN_COLORS))], dtype=np.float32)
    luma = scene.image.mean(axis=-1, keepdims=True)
    # The surface's texture shows through a coloured film.
    strength = rng.uniform(*strengths)
    appearance = (1 - strength) * scene.image + strength * color * (0.5 + luma)
    return Drawn(_opacity(region, feather=radius * 0.6, floor=0.4), appearance)


def _stain(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A blob of coloured film with a blurred edge."""
    return _film(scene, rng, scale, (0.5, 0.8))


def _faint_stain(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A stain of low contrast: a thin film, 6-12 % opaque (a change of a few grey levels)."""
    return _film(scene, rng, scale, (0.06, 0.12))


def _hairline(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A one-pixel curve at any image size, 10-20 % lighter or darker than the surface."""
    start = _random_center(scene, rng, margin=0)
    region = _curve(scene.surface.shape[0], rng, start, scale, half_width=0) & scene.surface
    strength = rng.uniform(0.10, 0.20)
    image = scene.image
    appearance = image + (1 - image) * strength if rng.random() < 0.5 else image * (1 - strength)
    return Drawn(region.astype(np.float32), appearance)


def _hole(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A dark irregular region, darkest in the middle, with a soft rim."""
    radius = rng.uniform(4, 11) * scale
    region = _blob(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    depth = np.clip(distance_transform_edt(region) / radius, 0, 1)[..., None]
    darkness = rng.uniform(0.03, 0.1)
    # Darker toward the middle; the surface's own texture faintly visible in the rim.
    appearance = darkness * (1 + scene.image) * (1.6 - depth)
    return Drawn(_opacity(region, feather=max(2.0, radius * 0.35), floor=0.55), appearance)


def _piece(size: int, rng: np.random.Generator, center: np.ndarray,
           radius: float) -> np.ndarray:
    """A blob or a rotated rectangle (a cut-and-glued piece) of about ``radius``."""
    if rng.random() < 0.5:
        region = _blob(size, rng, center, radius)
    else:  # a rotated rectangle: a cut-and-glued piece
        dy, dx = grid(size, center)
        angle = rng.uniform(0, math.pi)
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        region = (np.abs(u) <= radius) & (np.abs(v) <= radius * rng.uniform(0.4, 0.9))
    return region


def _patch(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A piece of another photographed texture, blob- or rectangle-shaped."""
    size = scene.surface.shape[0]
    other = [name for name in PHOTO_TEXTURES if name != category]
    appearance = texture(other[rng.integers(len(other))], size, rng)
    return _pasted(scene, rng, rng.uniform(8, 18) * scale, appearance)


def _pasted(scene: Scene, rng: np.random.Generator, radius: float,
            appearance: np.ndarray) -> Drawn:
    """``appearance`` pasted in a piece of about ``radius`` at a random place, sharp-edged."""
    region = _piece(scene.surface.shape[0], rng, _random_center(scene, rng, radius), radius)
    return Drawn(_opacity(region & scene.surface, feather=1.5, floor=0.8), appearance)


def _layout(scene: Scene, kind: type, defect: Defect) -> Weave | Brushed | Board:
    """The scene's procedural parameters, or a ValueError when it has none of ``kind``."""
    if not isinstance(scene.layout, kind):
        raise ValueError(f"the {defect.value!r} defect redraws a {kind.__name__.lower()}: it "
                         f"needs a Scene whose layout is a {kind.__name__}, got "
                         f"{type(scene.layout).__name__}; use the 'fabric', 'steel' or 'pcb' "
                         "category")
    return scene.layout


def _restructured(scene: Scene, rng: np.random.Generator, scale: float,
                  redraw: Callable[[np.random.Generator, float, float], Weave | Brushed],
                  coarser: tuple[float, float], finer: tuple[float, float],
                  turns: tuple[float, float]) -> Drawn:
    """A piece of the same texture redrawn by ``redraw(rng, factor, turn)``: half the time
    with its scale times a factor from ``coarser`` or ``finer``, else turned by ``turns``
    degrees either way (same colours and contrast: only the structure differs)."""
    if rng.random() < 0.5:
        factor = rng.uniform(*coarser) if rng.random() < 0.5 else rng.uniform(*finer)
        other = redraw(rng, factor, 0.0)
    else:
        other = redraw(rng, 1.0, _turn(rng, *turns))
    size = scene.surface.shape[0]
    return _pasted(scene, rng, rng.uniform(10, 20) * scale, other.render(size))


def _weave(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A piece of the same cloth woven 25-45 % coarser or 20-30 % finer, or turned by 15-40
    degrees: the same yarn, colours and brightness, so only the structure differs."""
    weave = _layout(scene, Weave, Defect.WEAVE)
    return _restructured(scene, rng, scale, weave.rewoven, (1.25, 1.45), (0.7, 0.8), (15, 40))


def _brushing(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A piece of the same steel brushed with streaks 2-2.5x longer or 0.35-0.5x as long, or
    turned by 12-35 degrees: the same brightness and contrast, only the structure differs."""
    brushed = _layout(scene, Brushed, Defect.BRUSHING)
    return _restructured(scene, rng, scale, brushed.rebrushed, (2.0, 2.5), (0.35, 0.5),
                         (12, 35))


def _turn(rng: np.random.Generator, low: float, high: float) -> float:
    """A turn of ``low`` to ``high`` degrees either way, in radians."""
    return math.radians(rng.uniform(low, high) * rng.choice([-1, 1]))


def _redrawn(scene: Scene, before: np.ndarray, board: Board,
             after: np.ndarray) -> Drawn:
    """``board`` drawn over the pixels that the coverages ``before`` or ``after`` cover by
    at least :data:`_FOOTPRINT` (fainter anti-aliased rims are left as they were)."""
    region = (before >= _FOOTPRINT) | (after >= _FOOTPRINT)
    return Drawn(region.astype(np.float32), board.render(scene.surface.shape[0]))


def _missing_part(scene: Scene, rng: np.random.Generator) -> Drawn:
    """One part of the board absent: its footprint shows the bare board."""
    board = _layout(scene, Board, Defect.MISSING)
    size = scene.surface.shape[0]
    gone = int(rng.integers(len(board.parts)))
    footprint = board.part_coverage(board.parts[gone], size)
    rest = board.parts[:gone] + board.parts[gone + 1:]
    return _redrawn(scene, footprint, board.with_parts(rest), footprint)


def _misplaced(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """One part moved by 1.5-3 % of the image side (2-4 px at 128 px), or (not a disc) turned
    by 8-20 degrees: the mask covers where it was and where it is."""
    board = _layout(scene, Board, Defect.MISPLACED)
    size = scene.surface.shape[0]
    index = int(rng.integers(len(board.parts)))
    part = board.parts[index]
    if part.disc or rng.random() < 0.5:  # a turned disc would look the same
        heading, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.015, 0.03)
        center = (part.center[0] + distance * math.sin(heading),
                  part.center[1] + distance * math.cos(heading))
        moved = replace(part, center=center)
    else:
        moved = replace(part, angle=part.angle + math.radians(rng.uniform(8, 20))
                        * rng.choice([-1, 1]))
    parts = board.parts[:index] + (moved,) + board.parts[index + 1:]
    return _redrawn(scene, board.part_coverage(part, size), board.with_parts(parts),
                    board.part_coverage(moved, size))


def _extra(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A small part (resistor, capacitor, solder ball; at least 3.6 pixels across) on a free
    spot of the board (or, when 20 random spots are all taken, the last one tried)."""
    board = _layout(scene, Board, Defect.EXTRA)
    size = scene.surface.shape[0]
    occupied = sum(board.part_coverage(part, size) for part in board.parts) > 0
    catalogue = part_catalogue()
    for _ in range(_MAX_PLACEMENTS):
        where = tuple(rng.uniform(-0.8, 0.8) * half for half in BOARD_HALF)
        turn = math.radians(rng.choice([0, 90]) + rng.normal(0, 3))
        part = catalogue[rng.integers(len(catalogue))]
        half = tuple(max(h, _LEAST_HALF_PIXELS / size) for h in part.half)
        extra = replace(part, center=where, angle=turn, half=half)
        footprint = board.part_coverage(extra, size)
        if not (occupied & (footprint > 0)).any():
            break
    return _redrawn(scene, footprint, board.with_parts(board.parts + (extra,)), footprint)


def _shifted(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """The whole board moved by 2.5-4.5 % of the image side or turned by 3-6 degrees (its
    normal placement varies by 0.6 % and 0.8 degrees): the mask is both footprints."""
    board = _layout(scene, Board, Defect.SHIFTED)
    size = scene.surface.shape[0]
    if rng.random() < 0.5:
        heading, distance = rng.uniform(0, 2 * math.pi), rng.uniform(0.025, 0.045)
        moved = board.moved(shift=(distance * math.sin(heading), distance * math.cos(heading)))
    else:
        moved = board.moved(turn=math.radians(rng.uniform(3, 6) * rng.choice([-1, 1])))
    return _redrawn(scene, board.board_coverage(size), moved, moved.board_coverage(size))


def _missing(scene: Scene, rng: np.random.Generator, scale: float, category: str) -> Drawn:
    """A bite out of the nut's outline showing the background, or a part of a board absent."""
    if isinstance(scene.layout, Board):
        return _missing_part(scene, rng)
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
    Defect.FAINT_STAIN: _faint_stain,
    Defect.HAIRLINE: _hairline,
    Defect.WEAVE: _weave,
    Defect.BRUSHING: _brushing,
    Defect.MISPLACED: _misplaced,
    Defect.EXTRA: _extra,
    Defect.SHIFTED: _shifted,
}
"""How each defect type is drawn: ``(scene, rng, scale, category) -> Drawn``, ``scale`` the
image size over 128 px."""
