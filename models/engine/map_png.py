"""Anomaly maps as 16-bit grayscale PNGs on a recorded linear scale that never saturates.

A map PNG value ``v`` means the score ``low + v / MAP_PNG_MAX * (high - low)``. ``(low,
high)`` is the run's display range (:attr:`~.thresholds.Thresholds.map_range`: from the
lowest training map value to twice the pixel threshold's distance above it), widened to the
map's own minimum and maximum: maps of normal images share one scale (comparable by eye),
and a strongly anomalous map gets a wider one instead of being clipped. The scale of each file
is stored in its PNG text chunks (:data:`LOW_KEY`, :data:`HIGH_KEY`) and in
``predictions.json``; :func:`read_map_png` decodes a file back to scores (to 1/65535 of its
range; ``--format npy`` keeps float32 maps).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

__all__ = ["HIGH_KEY", "LOW_KEY", "MAP_PNG_MAX", "map_scale", "read_map_png", "write_map_png"]

MAP_PNG_MAX = 2**16 - 1
"""The value a map PNG stores for the top of its scale."""

LOW_KEY = "flowkit:map_low"
HIGH_KEY = "flowkit:map_high"
_RULE_KEY = "flowkit:map_scale"
_MIN_RANGE = 1e-12  # a constant map still gets a valid scale


def map_scale(scores: np.ndarray, base: tuple[float, float]) -> tuple[float, float]:
    """``base`` widened to the minimum and maximum of ``scores`` (see the module docstring).

    Example:
        >>> map_scale(np.array([0.5, 9.0]), (0.0, 2.0))
        (0.0, 9.0)
    """
    low = min(base[0], float(scores.min()))
    high = max(base[1], float(scores.max()))
    return low, max(high, low + _MIN_RANGE)


def write_map_png(path: str | Path, scores: np.ndarray,
                  base: tuple[float, float]) -> tuple[float, float]:
    """Write ``[H, W]`` scores as a 16-bit PNG on :func:`map_scale`'s scale, stored in the file.

    Args:
        path: the PNG to write.
        scores: the anomaly map, finite.
        base: the run's display range.

    Returns:
        The file's ``(low, high)``.
    """
    low, high = map_scale(scores, base)
    values = np.round((scores.astype(np.float64) - low) / (high - low) * MAP_PNG_MAX)
    image = Image.fromarray(np.clip(values, 0, MAP_PNG_MAX).astype(np.uint16))
    text = PngImagePlugin.PngInfo()
    text.add_text(LOW_KEY, repr(low))
    text.add_text(HIGH_KEY, repr(high))
    text.add_text(_RULE_KEY, f"score = {LOW_KEY} + value / {MAP_PNG_MAX} * "
                             f"({HIGH_KEY} - {LOW_KEY})")
    image.save(path, pnginfo=text)
    return low, high


def read_map_png(path: str | Path) -> np.ndarray:
    """The scores of a map PNG written by :func:`write_map_png`, ``[H, W]`` float64.

    Raises:
        ValueError: the file has no flowkit scale in its text chunks.
    """
    with Image.open(path) as image:
        text = getattr(image, "text", {})
        if LOW_KEY not in text or HIGH_KEY not in text:
            raise ValueError(f"{path} is not a map PNG of flowkit predict (no {LOW_KEY} and "
                             f"{HIGH_KEY} text chunks)")
        values = np.asarray(image, dtype=np.float64)
    low, high = float(text[LOW_KEY]), float(text[HIGH_KEY])
    return low + values / MAP_PNG_MAX * (high - low)
