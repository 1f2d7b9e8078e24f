"""Evaluation on the test split: anomaly maps and scores, the metrics, and their JSON record."""

from __future__ import annotations

import datetime
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from flowkit import __version__

from ..base import AnomalyModel
from ..data import Item
from ..metrics import (
    DEFAULT_FPR_LIMIT,
    aupro,
    image_aupr,
    image_auroc,
    image_f1_max,
    legacy_pro,
    pixel_aupr,
    pixel_auroc,
    pixel_f1_max,
)
from .files import write_json

__all__ = [
    "AUPRO_KEY",
    "LEGACY_PRO_NOTE",
    "METRIC_LABELS",
    "Evaluation",
    "compute_metrics",
    "predict_dataset",
    "write_metrics",
]

AUPRO_KEY = f"aupro_{DEFAULT_FPR_LIMIT}"
"""The key of the MVTec AUPRO in ``metrics.json``: ``aupro_0.3``."""

METRIC_LABELS = {
    "image_auroc": "image AUROC",
    "image_aupr": "image AUPR (average precision)",
    "image_f1_max": "image F1-max",
    "image_f1_threshold": "image F1-max threshold (test set)",
    "pixel_auroc": "pixel AUROC",
    "pixel_aupr": "pixel AUPR (average precision)",
    "pixel_f1_max": "pixel F1-max",
    "pixel_f1_threshold": "pixel F1-max threshold (test set)",
    AUPRO_KEY: f"AUPRO@{DEFAULT_FPR_LIMIT} (MVTec protocol)",
    "legacy_pro": "legacy full-range PRO (PyramidFlow paper's 'AUPRO')",
}
"""The quality metrics, by their key in ``metrics.json``, with the names a table shows."""

LEGACY_PRO_NOTE = (
    "legacy_pro is the PyramidFlow paper's full-range unnormalized PRO (reported there as "
    "AUPRO); it is not the MVTec AUPRO, which is aupro_0.3"
)


@dataclass(frozen=True)
class Evaluation:
    """A model's output on a dataset, with the ground truth, on the CPU.

    Attributes:
        maps: ``[N, 1, H, W]`` float32 anomaly maps.
        scores: ``[N]`` image scores.
        masks: ``[N, 1, H, W]`` bool ground truth.
        labels: ``[N]`` int64, 1 for a defective image.
        defects: the defect type of each image (``"good"`` for normal ones).
        paths: where each image comes from.
        model_seconds: time spent in the model (data loading excluded).
    """

    maps: Tensor
    scores: Tensor
    masks: Tensor
    labels: Tensor
    defects: list[str]
    paths: list[str]
    model_seconds: float

    @property
    def images_per_second(self) -> float:
        """Model throughput."""
        return len(self.paths) / max(self.model_seconds, 1e-9)


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def predict_dataset(model: AnomalyModel, dataset: Dataset[Item], batch_size: int,
                    device: torch.device, workers: int = 0) -> Evaluation:
    """Anomaly maps and scores of every image of ``dataset`` (eval mode, no gradients).

    Args:
        model: the model; put in eval mode.
        dataset: the test images.
        batch_size: images per batch.
        device: where the model runs.
        workers: data-loading worker processes.

    Returns:
        The maps, scores and ground truth, on the CPU.
    """
    model.eval()
    maps, scores, masks, labels, defects, paths = [], [], [], [], [], []
    seconds = 0.0
    for batch in DataLoader(dataset, batch_size=batch_size, num_workers=workers):
        images = batch.image.to(device, non_blocking=True)
        _synchronize(device)
        start = time.perf_counter()
        batch_maps, batch_scores = model.predict(images)
        _synchronize(device)
        seconds += time.perf_counter() - start
        maps.append(batch_maps.float().cpu())
        scores.append(batch_scores.float().cpu())
        masks.append(batch.mask > 0)
        labels.append(batch.label)
        defects += batch.defect
        paths += batch.path
    return Evaluation(torch.cat(maps), torch.cat(scores), torch.cat(masks), torch.cat(labels),
                      defects, paths, seconds)


def compute_metrics(evaluation: Evaluation) -> dict[str, float]:
    """The quality metrics of :data:`METRIC_LABELS`.

    Raises:
        ValueError: the test set lacks normal or defective images, or the maps hold NaN.
    """
    maps, masks = evaluation.maps, evaluation.masks
    values = (
        image_auroc(evaluation.scores, evaluation.labels),
        image_aupr(evaluation.scores, evaluation.labels),
        *image_f1_max(evaluation.scores, evaluation.labels),  # the F1 and its threshold
        pixel_auroc(maps, masks),
        pixel_aupr(maps, masks),
        *pixel_f1_max(maps, masks),
        aupro(maps, masks, DEFAULT_FPR_LIMIT),
        legacy_pro(maps, masks),
    )
    return dict(zip(METRIC_LABELS, values, strict=True))


def write_metrics(path: str | Path, metrics: dict[str, float], evaluation: Evaluation,
                  device: torch.device, checkpoint: str | Path) -> dict[str, Any]:
    """Write ``metrics.json``: the metrics, timing, counts and where they were measured.

    Args:
        path: the file to write.
        metrics: what :func:`compute_metrics` returned.
        evaluation: for the counts and the timing.
        device: the device the model ran on.
        checkpoint: the checkpoint evaluated.

    Returns:
        The record written.
    """
    record = {
        **metrics,
        "images_per_second": evaluation.images_per_second,
        "num_images": len(evaluation.paths),
        "num_defective": int(evaluation.labels.sum()),
        "notes": {"legacy_pro": LEGACY_PRO_NOTE},
        "checkpoint": str(checkpoint),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU {platform.machine()} x{torch.get_num_threads()} threads",
        "flowkit_version": __version__,
        "torch_version": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_json(path, record)
    return record
