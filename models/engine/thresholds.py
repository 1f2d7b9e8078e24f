"""Where normal ends: thresholds fitted on the final model's output for the normal training
images (never on a test set), stored in a run's ``threshold.json``.

An image is anomalous when its score exceeds the :data:`THRESHOLD_QUANTILE` quantile of their
image scores, and the region where the map exceeds the same quantile of their per-image map
maxima is outlined. They are scores of images the model was trained on, so they run lower than
those of unseen normal images: expect some false alarms, and raise the thresholds in
``threshold.json`` if needed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..base import AnomalyModel
from ..data import Item
from ..errors import RunFolderError
from .files import read_json

__all__ = ["THRESHOLD_QUANTILE", "Thresholds", "fit_thresholds", "read_thresholds"]

THRESHOLD_QUANTILE = 0.995
"""The thresholds are this quantile of the normal training images' scores."""

_MIN_RANGE = 1e-12  # a constant map still gets a valid scale


@dataclass(frozen=True)
class Thresholds:
    """Where normal ends, from the final model's output on the normal training images.

    Attributes:
        image: an image whose score exceeds this is anomalous.
        pixel: the map region above this is outlined.
        map_min: the lowest map value of the normal training images.
        quantile: the quantile both thresholds are of.
        num_images: the normal training images they were fitted on.
    """

    image: float
    pixel: float
    map_min: float
    quantile: float
    num_images: int

    @property
    def map_range(self) -> tuple[float, float]:
        """The run's display range of maps (overlays, and map PNGs unless a map exceeds it,
        see :mod:`.map_png`): from ``map_min`` to twice as far above it as the pixel
        threshold, which is therefore at mid-scale.

        Example:
            >>> Thresholds(image=3.0, pixel=2.0, map_min=1.0, quantile=0.995,
            ...            num_images=10).map_range
            (1.0, 3.0)
        """
        return self.map_min, self.map_min + 2 * max(self.pixel - self.map_min, _MIN_RANGE)

    def to_json(self) -> dict[str, Any]:
        """The thresholds as ``threshold.json`` stores them."""
        return asdict(self)


def read_thresholds(path: str | Path) -> Thresholds:
    """Read ``threshold.json``.

    Raises:
        RunFolderError: the file is missing, not JSON, or lacks a field.
    """
    data = read_json(path)
    try:
        return Thresholds(**data)
    except TypeError as error:
        raise RunFolderError(
            f"{path} is not a threshold file of this flowkit ({error}); delete it, and "
            "`flowkit predict` fits it again from the training images"
        ) from error


@torch.no_grad()
def fit_thresholds(model: AnomalyModel, dataset: Dataset[Item], batch_size: int,
                   device: torch.device, workers: int = 0,
                   quantile: float = THRESHOLD_QUANTILE) -> Thresholds:
    """Fit the thresholds on normal images (see the module docstring).

    Args:
        model: the final model, fitted (``fit_normal``).
        dataset: the normal training images, not augmented.
        batch_size: images per batch.
        device: where the model runs.
        workers: data-loading worker processes.
        quantile: the quantile of the scores each threshold is.

    Returns:
        The thresholds.
    """
    model.eval()
    scores, peaks, low = [], [], math.inf
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        maps, batch_scores = model.predict(batch.image.to(device, non_blocking=True))
        scores.append(batch_scores.float().cpu())
        peaks.append(maps.flatten(1).amax(dim=1).float().cpu())
        low = min(low, float(maps.min()))
    all_scores, all_peaks = torch.cat(scores), torch.cat(peaks)
    return Thresholds(image=float(torch.quantile(all_scores, quantile)),
                      pixel=float(torch.quantile(all_peaks, quantile)),
                      map_min=low, quantile=quantile, num_images=all_scores.numel())
