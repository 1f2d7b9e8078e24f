"""The simple baseline every model must beat: distance to the mean training image.

No learning: the template is the mean of the normal training images; the anomaly map is
``compose(|decompose(x) - decompose(template)|)``, channel mean, through the same Laplacian
pyramid as PyramidFlow, so the comparison isolates what the flow learns.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from flowkit.pyramid import compose, decompose

from .base import AnomalyModel, register_model

__all__ = ["MeanImageBaseline"]

PYRAMID_MODE = "pyramidflow"


@register_model("baseline")
class MeanImageBaseline(AnomalyModel):
    """Pixel-space distance to the mean normal image, through a Laplacian pyramid.

    Args:
        levels: pyramid levels.
        image_size: size of the stored mean image (other sizes resize it).
    """

    needs_training = False

    def __init__(self, levels: int = 4, image_size: int | tuple[int, int] = 256) -> None:
        super().__init__(levels=levels, image_size=image_size)
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        self.levels = levels
        self.register_buffer("template", torch.zeros(1, 3, *size))
        self.register_buffer("has_template", torch.tensor(False))

    def size_multiple(self) -> int:
        """Every level must halve evenly."""
        return 2 ** (self.levels - 1)

    def loss(self, images: Tensor) -> Tensor:
        """No training: the baseline is fitted by :meth:`fit_normal` alone."""
        raise RuntimeError("the baseline is not trained by gradient steps; call fit_normal")

    @torch.no_grad()
    def fit_normal(self, batches: Iterable[Tensor]) -> None:
        """The mean of the normal images."""
        total, count = None, 0
        for images in batches:
            images = images.to(self.template.device, torch.float64)
            total = images.sum(0, keepdim=True) + (0 if total is None else total)
            count += images.shape[0]
        if total is None:
            raise ValueError("fit_normal needs at least one batch of normal training images")
        mean = (total / count).to(self.template.dtype)
        if mean.shape != self.template.shape:
            mean = F.interpolate(mean, size=self.template.shape[-2:], mode="bilinear",
                                 align_corners=False)
        self.template.copy_(mean)
        self.has_template.fill_(True)

    @torch.no_grad()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """Per-level absolute differences to the mean image, recomposed, channel mean."""
        template = self.template
        if template.shape[-2:] != images.shape[-2:]:
            template = F.interpolate(template, size=images.shape[-2:], mode="bilinear",
                                     align_corners=False)
        levels = decompose(images, self.levels, PYRAMID_MODE)
        reference = decompose(template.expand_as(images), self.levels, PYRAMID_MODE)
        diffs = [(a - b).abs() for a, b in zip(levels, reference, strict=True)]
        return compose(diffs, PYRAMID_MODE).mean(dim=1, keepdim=True)
