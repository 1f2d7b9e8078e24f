"""A procedural brushed-steel surface: the synthetic ``steel`` texture, drawn at any size.

Fine streaks along one direction: white noise low-passed far more along the brushing
direction than across it (a Gaussian filter in the Fourier domain), normalized to a fixed
mean and contrast, under a soft lighting gradient. A :class:`Brushed` holds every parameter, so
a defect can draw the same steel brushed in another direction or with shorter or longer
streaks: the same brightness and contrast, only the structure differs. Unlike the weave it
is not periodic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

__all__ = ["STREAK_LENGTH", "Brushed", "random_brushed"]

STREAK_LENGTH = 9.0
"""Standard deviation of the filter along the streaks, in pixels at 128 px (scaled)."""

_STREAK_WIDTH = 0.6  # the filter's standard deviation across the streaks, pixels at 128 px
_LENGTH_JITTER = 0.05
_ANGLE_JITTER_DEG = 2.0
_GAIN_JITTER = 0.03
_CONTRAST = 0.07
_STEEL = np.array([0.62, 0.63, 0.66], dtype=np.float32)


@dataclass(frozen=True)
class Brushed:
    """The parameters of a brushed surface.

    Attributes:
        length: the filter's standard deviation along the streaks, in pixels.
        width: the filter's standard deviation across them, in pixels.
        angle: the brushing direction, radians.
        seed: the white noise the streaks are filtered from.
        gain: overall brightness factor.
        light: ``(y, x)`` slope of the lighting gradient per image side.
    """

    length: float
    width: float
    angle: float
    seed: int
    gain: float
    light: tuple[float, float]

    def render(self, size: int) -> np.ndarray:
        """The surface, ``[size, size, 3]`` float32 in [0, 1]."""
        noise = np.random.default_rng(self.seed).standard_normal((size, size))
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.fftfreq(size)[None, :]
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        along, across = fx * cos + fy * sin, -fx * sin + fy * cos
        response = np.exp(-2 * math.pi**2 * ((self.length * along) ** 2
                                            + (self.width * across) ** 2))
        streaks = np.fft.ifft2(np.fft.fft2(noise) * response).real
        streaks = (streaks - streaks.mean()) / streaks.std()
        yy, xx = (np.mgrid[:size, :size] + 0.5) / size - 0.5
        shade = 1 + self.light[0] * yy + self.light[1] * xx + _CONTRAST * streaks
        image = _STEEL * (self.gain * shade)[..., None]
        return np.clip(image, 0, 1).astype(np.float32)

    def rebrushed(self, rng: np.random.Generator, length_factor: float = 1.0,
                  turn: float = 0.0) -> Brushed:
        """The same steel brushed with streaks ``length_factor`` as long, turned by ``turn``
        (new noise)."""
        return replace(self, length=self.length * length_factor, angle=self.angle + turn,
                       seed=int(rng.integers(2**31)))


def random_brushed(size: int, rng: np.random.Generator) -> Brushed:
    """A normal surface: the streak length, direction, brightness and lighting jitter."""
    scale = size / 128
    return Brushed(
        length=STREAK_LENGTH * scale * rng.uniform(1 - _LENGTH_JITTER, 1 + _LENGTH_JITTER),
        width=_STREAK_WIDTH * scale,
        angle=math.radians(rng.normal(0, _ANGLE_JITTER_DEG)),
        seed=int(rng.integers(2**31)),
        gain=rng.uniform(1 - _GAIN_JITTER, 1 + _GAIN_JITTER),
        light=tuple(rng.uniform(-0.08, 0.08, 2)),
    )
