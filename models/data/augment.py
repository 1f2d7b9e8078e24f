"""Texture augmentation of the PyramidFlow paper: random flips and 90-degree rotations."""

from __future__ import annotations

import torch
from torch import Tensor

from .item import Choice
from .synthetic import SYNTHETIC_TEXTURES

__all__ = [
    "AUGMENT_PROBABILITY",
    "MVTEC_TEXTURES",
    "Augmentation",
    "TextureAugment",
    "is_texture",
]

MVTEC_TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
"""The texture categories of MVTec AD; the other ten are objects."""

AUGMENT_PROBABILITY = 0.5
"""Each of horizontal flip, vertical flip and rotation is applied with this probability."""

_QUARTER_TURNS = 4


def is_texture(category: str) -> bool:
    """Whether ``category`` is a texture (MVTec AD's five and the synthetic ones) rather than
    an aligned object."""
    return category in MVTEC_TEXTURES or category in SYNTHETIC_TEXTURES


class Augmentation(Choice):
    """Whether training images are flipped and rotated (``flowkit train --augment``).

    ``auto``: as the model's rule says
    (:meth:`~flowkit.models.base.AnomalyModel.augments_by_default`); ``on`` and ``off``
    decide for every category.
    """

    AUTO = "auto"
    ON = "on"
    OFF = "off"


class TextureAugment:
    """Random horizontal flip, vertical flip and rotation by k * 90 degrees of image and mask.

    As in the official PyramidFlow code, each of the three is applied with probability 1/2,
    the rotation by a uniform k in {0, 1, 2, 3}. Odd k needs a square image; a non-square
    image is rotated by 180 degrees instead. Only textures should be augmented: an aligned
    object turned upside down is an anomaly.

    Args:
        generator: the random source; ``None`` uses torch's global one (seeded per worker
            by ``DataLoader``).

    Example:
        >>> image, mask = torch.rand(3, 8, 8), torch.zeros(1, 8, 8)
        >>> out_image, out_mask = TextureAugment()(image, mask)
        >>> out_image.shape == image.shape
        True

    References:
        Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using
        Pyramid Normalizing Flow", CVPR 2023, arXiv:2303.02595.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def _happens(self) -> bool:
        """A coin flip with probability :data:`AUGMENT_PROBABILITY`."""
        return float(torch.rand((), generator=self.generator)) < AUGMENT_PROBABILITY

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Transform ``image [C, H, W]`` and ``mask [1, H, W]`` alike."""
        flips = [dim for dim in (-1, -2) if self._happens()]
        if flips:
            image, mask = image.flip(flips), mask.flip(flips)
        if self._happens():
            turns = int(torch.randint(_QUARTER_TURNS, (1,), generator=self.generator))
            if image.shape[-1] != image.shape[-2] and turns % 2:
                turns = 2
            image, mask = image.rot90(turns, (-2, -1)), mask.rot90(turns, (-2, -1))
        return image, mask
