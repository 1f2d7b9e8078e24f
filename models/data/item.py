"""What every anomaly dataset returns: one ``Item`` per image, and the train/test ``Split``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ...kernels.choice import Choice

__all__ = ["GOOD", "Choice", "Item", "Split", "make_item", "resize_pair"]

GOOD = "good"
"""Defect type of a normal image, whatever the folder is called on disk (BTAD says ``ok``)."""


class Split(Choice):
    """Training images (normal only) or test images (normal and defective)."""

    TRAIN = "train"
    TEST = "test"


class Item(NamedTuple):
    """One image of an anomaly dataset; ``torch.utils.data.default_collate`` batches it.

    Attributes:
        image: ``[3, H, W]`` float32 in [0, 1].
        mask: ``[1, H, W]`` float32, 1 on defect pixels (all 0 for a normal image).
        label: 0 normal, 1 defective.
        defect: the defect type, ``"good"`` for a normal image.
        path: the image file (for in-memory synthetic data, the path it would be written to).
    """

    image: Tensor
    mask: Tensor
    label: int
    defect: str
    path: str


def resize_pair(image: Tensor, mask: Tensor, size: tuple[int, int] | None) -> tuple[Tensor, Tensor]:
    """Resize an image (bilinear, antialiased) and its mask (nearest) to ``size = (H, W)``.

    Args:
        image: ``[3, H, W]`` float.
        mask: ``[1, H, W]`` float.
        size: target ``(height, width)``; ``None`` or the current size leaves them unchanged.

    Returns:
        The resized image, clipped to [0, 1], and mask.
    """
    if size is None or tuple(image.shape[-2:]) == tuple(size):
        return image, mask
    image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True,
                          align_corners=False)[0].clamp_(0.0, 1.0)
    mask = F.interpolate(mask[None], size=size, mode="nearest-exact")[0]
    return image, mask


def make_item(image: np.ndarray, mask: np.ndarray | None, defect: str, path: str,
              size: tuple[int, int] | None) -> Item:
    """Build an ``Item`` from an ``[H, W, 3]`` float image in [0, 1] and an ``[H, W]`` bool mask.

    Args:
        image: the RGB image.
        mask: the defect mask, ``None`` for a normal image.
        defect: the defect type, :data:`GOOD` for a normal image.
        path: where the image comes from.
        size: ``(height, width)`` to resize to, ``None`` to keep the size.

    Returns:
        The item, resized.
    """
    image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)
    if mask is None:
        mask_t = torch.zeros(1, *image_t.shape[-2:])
    else:
        mask_t = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]
    image_t, mask_t = resize_pair(image_t.contiguous(), mask_t, size)
    return Item(image_t, mask_t, int(defect != GOOD), defect, path)
