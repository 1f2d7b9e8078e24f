"""Synthetic anomalies pasted onto any normal image (MVTec, folder or synthetic data), with
pixel-exact masks: the validation images that choose a training epoch without the test set.

Each defect is drawn by the synthetic dataset's own drawers
(:data:`~.synthetic_defects.DRAWERS`) on a scene whose surface is the whole image and whose
background is the image itself, then blended in with its soft-edged opacity: a pixel is in
the mask exactly when the opacity there is above zero, and every pixel outside the mask keeps
its value bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .item import GOOD, Item
from .synthetic_defects import DRAWERS, Defect
from .synthetic_scenes import Scene

__all__ = [
    "DRAWER_REFERENCE_SIZE",
    "MIN_IMAGE_SIZE",
    "MIN_SCALE",
    "PASTED_DEFECTS",
    "PastedAnomalies",
    "paste_defect",
    "pasted_rng",
]

PASTED_DEFECTS = (Defect.SCRATCH, Defect.STAIN, Defect.HOLE, Defect.PATCH, Defect.FAINT_STAIN,
                  Defect.HAIRLINE)
"""The defect kinds pasted, in turn: the obvious ones and two of low contrast (a 6-12 % opaque
film, a one-pixel line 10-20 % lighter or darker), so that validation scores do not all
saturate near 1. Left out: those that need an object's background or a procedural scene
(``missing``, ``weave``, ``misplaced``, ``extra``, ``shifted``), which an arbitrary image
does not have."""

DRAWER_REFERENCE_SIZE = 128
"""The drawers' geometric constants are in pixels at this image side (their ``scale`` is the
image side over it), as for the synthetic dataset; below :data:`MIN_SCALE` times it they keep
that scale, so that a defect still covers a few pixels."""

MIN_SCALE = 0.25
MIN_IMAGE_SIZE = 16
"""The smallest image side a defect is pasted on."""

_MIN_DEFECT_FRACTION = 0.0015  # of the image area; smaller draws are redrawn
_MIN_DEFECT_PIXELS = 4
_MAX_DRAWS = 50
_CHANNELS = 3


def pasted_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of the defect pasted on image ``index``: a function of
    ``(seed, index)`` only."""
    return np.random.default_rng([seed, index])


def paste_defect(image: Tensor, defect: Defect | str, rng: np.random.Generator) -> tuple[Tensor,
                                                                                          Tensor]:
    """Paste one synthetic defect onto an image.

    Args:
        image: ``[3, S, S]`` float in [0, 1] (square: the drawers draw on square scenes).
        defect: one of :data:`PASTED_DEFECTS`.
        rng: where the defect's shape, place and appearance are drawn from.

    Returns:
        ``(pasted [3, S, S] float32 in [0, 1], mask [1, S, S] float32)``: the mask is 1 exactly
        where the defect's opacity is above zero; outside it the pasted image equals
        ``image`` exactly.

    Raises:
        ValueError: an image that is not ``[3, S, S]`` with ``S >= 16``, or a defect kind
            that is not one of :data:`PASTED_DEFECTS`.
        RuntimeError: no draw covered enough pixels in 50 tries (not seen in practice).

    Example:
        >>> image = torch.full((3, 64, 64), 0.5)
        >>> pasted, mask = paste_defect(image, "stain", pasted_rng(0, 0))
        >>> bool(mask.any()), bool((pasted[:, mask[0] == 0] == 0.5).all())
        (True, True)
    """
    defect = Defect(defect)
    if defect not in PASTED_DEFECTS:
        raise ValueError(f"cannot paste a {defect.value} on an arbitrary image; choose from "
                         f"{[d.value for d in PASTED_DEFECTS]}")
    if image.dim() != _CHANNELS or image.shape[0] != _CHANNELS \
            or image.shape[1] != image.shape[2] or image.shape[1] < MIN_IMAGE_SIZE:
        raise ValueError(f"paste_defect takes a square image [3, S, S] with S >= "
                         f"{MIN_IMAGE_SIZE}, got shape {tuple(image.shape)}")
    normal = image.detach().float().cpu().permute(1, 2, 0).numpy()
    size = normal.shape[0]
    scene = Scene(normal, np.ones((size, size), dtype=bool), normal)
    min_pixels = max(_MIN_DEFECT_PIXELS, _MIN_DEFECT_FRACTION * size * size)
    for _ in range(_MAX_DRAWS):
        drawn = DRAWERS[defect](scene, rng, max(size / DRAWER_REFERENCE_SIZE, MIN_SCALE), "")
        mask = drawn.opacity > 0
        if mask.sum() >= min_pixels:
            break
    else:
        raise RuntimeError(f"could not draw a {defect.value} of {min_pixels:.0f} pixels or more "
                           f"on a {size} px image in {_MAX_DRAWS} tries")
    change = (drawn.opacity[..., None] * (drawn.appearance - normal)).astype(np.float32)
    # Outside the mask the change is exactly zero, and clipping leaves values in [0, 1] alone.
    pasted = np.where(mask[..., None], np.clip(normal + change, 0, 1), normal)
    pasted_t = torch.from_numpy(np.ascontiguousarray(pasted, dtype=np.float32)).permute(2, 0, 1)
    return pasted_t.contiguous(), torch.from_numpy(mask.astype(np.float32))[None]


class PastedAnomalies(Dataset[Item]):
    """Normal images, each twice: as it is, and with a pasted defect.

    Item ``k < n`` is image ``indices[k]`` of ``images`` unchanged (label 0); item ``n + k`` is
    the same image with a :data:`PASTED_DEFECTS` kind pasted (label 1; the kinds in turn by
    ``k``), drawn from :func:`pasted_rng` of ``(seed, indices[k])``. Each defective image has
    its normal twin, so the image AUROC compares an image with and without the defect.

    Args:
        images: the normal images (e.g. a training split, not augmented).
        indices: which of them to use.
        seed: the seed of the pasted defects.

    Raises:
        ValueError: no indices, or one outside ``images``.

    Example:
        >>> from flowkit.models.data import SyntheticDataset
        >>> normal = SyntheticDataset("nut", "train", image_size=32, num_train=4)
        >>> pasted = PastedAnomalies(normal, [1, 3], seed=0)
        >>> len(pasted), [item.label for item in pasted], pasted[2].defect
        (4, [0, 0, 1, 1], 'scratch')
    """

    def __init__(self, images: Dataset[Item], indices: Sequence[int], seed: int) -> None:
        count = len(images)  # type: ignore[arg-type]
        if not indices or not all(0 <= i < count for i in indices):
            raise ValueError(f"PastedAnomalies needs indices in [0, {count}), got "
                             f"{list(indices)}")
        self.images, self.indices, self.seed = images, list(indices), seed

    def __len__(self) -> int:
        return 2 * len(self.indices)

    def __getitem__(self, position: int) -> Item:
        if not 0 <= position < len(self):
            raise IndexError(f"item {position} of {len(self)}")
        k = position % len(self.indices)
        index = self.indices[k]
        item = self.images[index]
        if position < len(self.indices):
            return item._replace(mask=torch.zeros_like(item.mask), label=0, defect=GOOD)
        defect = PASTED_DEFECTS[k % len(PASTED_DEFECTS)]
        image, mask = paste_defect(item.image, defect, pasted_rng(self.seed, index))
        return Item(image, mask, 1, defect.value, f"{item.path}#pasted-{defect.value}")
