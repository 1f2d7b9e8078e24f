"""A procedural plain-weave fabric: the synthetic ``fabric`` texture, drawn at any size.

Warp and weft threads cross over and under in a checkerboard; each thread is a rounded ridge
whose height dips where it passes under the crossing thread. A :class:`Weave` holds every
parameter, so a defect can draw the same cloth with one parameter changed (a patch woven
at another pitch or angle: the same colours and brightness, only the structure differs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["WEAVE_PITCH", "Weave", "random_weave"]

WEAVE_PITCH = 5.5
"""Thread spacing in pixels at 128 px (scaled with the image size)."""

_PITCH_JITTER = 0.03  # relative, between normal images
_ANGLE_JITTER_DEG = 1.5
_GAIN_JITTER = 0.04
_THREAD_GAIN = 0.07  # per-thread brightness spread (uneven yarn)
_THREADS = 97  # per-thread gains repeat after this many threads
_WARP = np.array([0.78, 0.72, 0.60], dtype=np.float32)  # undyed linen
_WEFT = np.array([0.70, 0.66, 0.56], dtype=np.float32)
_SUPERSAMPLE = 3


@dataclass(frozen=True)
class Weave:
    """The parameters of a plain weave.

    Attributes:
        pitch: thread spacing in pixels.
        angle: direction of the warp threads, in radians.
        phase: ``(u, v)`` offset of the thread grid, in pixels.
        gain: overall brightness factor.
        warp_gains: ``[_THREADS]`` brightness factor of each warp thread.
        weft_gains: ``[_THREADS]`` brightness factor of each weft thread.
    """

    pitch: float
    angle: float
    phase: tuple[float, float]
    gain: float
    warp_gains: np.ndarray
    weft_gains: np.ndarray

    def render(self, size: int) -> np.ndarray:
        """The cloth, ``[size, size, 3]`` float32 in [0, 1], anti-aliased by supersampling."""
        fine = size * _SUPERSAMPLE
        yy, xx = (np.mgrid[:fine, :fine].astype(np.float64) + 0.5) / _SUPERSAMPLE
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u = (xx * cos + yy * sin + self.phase[0]) / self.pitch
        v = (-xx * sin + yy * cos + self.phase[1]) / self.pitch
        i, j = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
        across_warp, across_weft = np.sin(math.pi * (u - i)), np.sin(math.pi * (v - j))
        warp_over = np.where((i + j) % 2 == 0, 1.0, -1.0)
        # Heights: a thread is highest mid-cell where it lies on top, lowest where it dives.
        warp = across_warp * (1 + warp_over * across_weft) / 2
        weft = across_weft * (1 - warp_over * across_warp) / 2
        on_top = (warp >= weft)[..., None]
        height = np.maximum(warp, weft)[..., None]
        warp_color = _WARP * self.warp_gains[i % _THREADS][..., None]
        weft_color = _WEFT * self.weft_gains[j % _THREADS][..., None]
        color = np.where(on_top, warp_color, weft_color) * (0.45 + 0.6 * height) * self.gain
        blocks = color.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
        return np.clip(blocks, 0, 1).astype(np.float32)

    def rewoven(self, rng: np.random.Generator, pitch_factor: float = 1.0,
                turn: float = 0.0) -> Weave:
        """The same yarn woven at ``pitch * pitch_factor`` and ``angle + turn``, new phase."""
        return replace(self, pitch=self.pitch * pitch_factor, angle=self.angle + turn,
                       phase=tuple(rng.uniform(0, 2 * self.pitch * pitch_factor, 2)))


def random_weave(size: int, rng: np.random.Generator) -> Weave:
    """A normal cloth: the pitch, angle, phase and brightness jitter between images."""
    pitch = WEAVE_PITCH * size / 128 * rng.uniform(1 - _PITCH_JITTER, 1 + _PITCH_JITTER)
    return Weave(
        pitch=pitch,
        angle=math.radians(rng.normal(0, _ANGLE_JITTER_DEG)),
        phase=tuple(rng.uniform(0, 2 * pitch, 2)),
        gain=rng.uniform(1 - _GAIN_JITTER, 1 + _GAIN_JITTER),
        warp_gains=1 + _THREAD_GAIN * rng.standard_normal(_THREADS),
        weft_gains=1 + _THREAD_GAIN * rng.standard_normal(_THREADS),
    )
