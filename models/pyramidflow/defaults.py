"""The PyramidFlow paper's per-category settings (levels and volume normalization)."""

from __future__ import annotations

__all__ = ["defaults_for"]

_EIGHT_LEVELS = frozenset({"metal_nut", "carpet", "transistor"})
_TWO_LEVELS = frozenset({"screw"})
_SPATIAL_NORM = frozenset({"carpet", "grid", "bottle", "transistor"})


def defaults_for(category: str) -> dict[str, object]:
    """``levels`` and ``volume_norm`` for an MVTec-AD category (4 and CVN for any other).

    Example:
        >>> defaults_for("carpet")
        {'levels': 8, 'volume_norm': 'spatial'}
    """
    levels = 8 if category in _EIGHT_LEVELS else 2 if category in _TWO_LEVELS else 4
    volume_norm = "spatial" if category in _SPATIAL_NORM else "channel"
    return {"levels": levels, "volume_norm": volume_norm}
