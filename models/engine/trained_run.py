"""A finished run from Python: its final model with its thresholds, ready to predict.

Example (the README's "Use it from Python")::

    run = load_run("runs/pyramidflow-brick")
    result = run.predict(["image.png"])      # or a [B, 3, H, W] tensor in [0, 1]
    result.maps, result.scores, result.anomalous
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from ..base import AnomalyModel
from ..data import Split
from .checkpoint import load_model
from .config import RunConfig
from .predict import ImageFiles
from .run_folder import RunFolder, Trained
from .thresholds import Thresholds, fit_thresholds, read_thresholds
from .validation import fitted_images

__all__ = ["RunPredictions", "TrainedRun", "load_run"]

_IMAGE_DIMS = 4
_RGB = 3


class RunPredictions(NamedTuple):
    """What :meth:`TrainedRun.predict` returns, on the CPU.

    Attributes:
        maps: ``[B, 1, H, W]`` float32 anomaly maps.
        scores: ``[B]`` float32 image scores.
        anomalous: ``[B]`` bool, ``scores > threshold``.
    """

    maps: Tensor
    scores: Tensor
    anomalous: Tensor


@dataclass(frozen=True)
class TrainedRun:
    """A run's final model (eval mode) with its thresholds.

    Attributes:
        model: the final model, on :attr:`device`.
        thresholds: fitted on the run's normal training images (``threshold.json``).
        config: the run's settings.
        folder: the run folder.
        device: where the model runs.
    """

    model: AnomalyModel
    thresholds: Thresholds
    config: RunConfig
    folder: RunFolder
    device: torch.device

    @property
    def threshold(self) -> float:
        """An image whose score exceeds this is anomalous."""
        return self.thresholds.image

    @property
    def image_size(self) -> int:
        """The side the model was trained at; image files are resized to it."""
        return self.config.data.image_size

    def _check(self, images: Tensor) -> Tensor:
        """``images`` as a float batch on the device, or a ``TypeError``/``ValueError``."""
        if not isinstance(images, Tensor) or not images.is_floating_point():
            raise TypeError(f"predict takes a float tensor or a list of image files, got "
                            f"{type(images).__name__}"
                            + (f" of {images.dtype}" if isinstance(images, Tensor) else ""))
        if images.dim() != _IMAGE_DIMS or images.shape[1] != _RGB:
            raise ValueError(f"predict takes images [B, 3, H, W], got shape "
                             f"{tuple(images.shape)}")
        if images.numel() and not (images.min() >= 0 and images.max() <= 1):
            raise ValueError("predict takes images with values in [0, 1] (not normalized: the "
                             f"model normalizes), got [{float(images.min()):.3g}, "
                             f"{float(images.max()):.3g}]")
        self.model.check_image_size(*images.shape[-2:])
        return images.to(self.device)

    @torch.no_grad()
    def predict(self, images: Tensor | Sequence[str | Path],
                batch_size: int | None = None) -> RunPredictions:
        """Anomaly maps, scores and verdicts of images.

        Args:
            images: ``[B, 3, H, W]`` float in [0, 1] (any size the model takes), or image
                files (read as RGB, resized to :attr:`image_size`).
            batch_size: images per batch (default: the run's).

        Returns:
            Maps, scores and ``scores > threshold``, on the CPU.

        Raises:
            TypeError: neither a float tensor nor a list of files.
            ValueError: a wrong shape, values outside [0, 1], a size the model cannot take.
            DatasetError: a file that cannot be read.
        """
        batch_size = batch_size or self.config.batch_size
        if isinstance(images, Sequence) and not isinstance(images, str):
            loader = DataLoader(ImageFiles([Path(p) for p in images], self.image_size),
                                batch_size=batch_size)
            batches = list(loader)
        else:
            checked = self._check(images)  # type: ignore[arg-type]
            batches = list(checked.split(batch_size))
        maps, scores = [], []
        for batch in batches:
            batch_maps, batch_scores = self.model.predict(batch.to(self.device))
            maps.append(batch_maps.float().cpu())
            scores.append(batch_scores.float().cpu())
        all_maps = torch.cat(maps) if maps else torch.empty(0, 1, self.image_size,
                                                            self.image_size)
        all_scores = torch.cat(scores) if scores else torch.empty(0)
        return RunPredictions(all_maps, all_scores, all_scores > self.threshold)


def run_thresholds(folder: RunFolder, config: RunConfig, model: AnomalyModel,
                   device: torch.device, batch_size: int, workers: int = 0,
                   path: Path | None = None) -> tuple[Thresholds, bool]:
    """A run's thresholds (``path``, default ``threshold.json``), fitted on its training
    images if the file is missing (a run trained before flowkit wrote it); and whether they
    were fitted now."""
    path = path or folder.threshold
    if path.is_file():
        return read_thresholds(path), False
    training, _ = fitted_images(config.data.dataset(Split.TRAIN.value), config.model,
                                config.val_fraction, config.batch_size)
    return fit_thresholds(model, training, batch_size, device, workers), True


def load_run(path: str | Path, device: str | torch.device = "cpu",
             checkpoint: Trained | str = Trained.FINAL) -> TrainedRun:
    """Load a finished run of ``flowkit train`` for prediction.

    Args:
        path: the run folder (``--out`` of ``flowkit train``).
        device: where the model runs.
        checkpoint: ``"final"``, or ``"best"``: the best epoch on validation (runs trained
            with a validation split), with its own thresholds.

    Returns:
        The run's final (or best) model with its thresholds.

    Raises:
        RunFolderError: ``path`` is not a run folder.
        CheckpointError: ``checkpoints/final.pt`` (or ``best.pt``) is missing or cannot be
            used.
        ValueError: ``checkpoint`` is neither ``final`` nor ``best``.
    """
    folder = RunFolder.open(path)
    config = folder.read_config()
    device = torch.device(device)
    weights, threshold_file, advice = folder.trained(checkpoint)
    model = load_model(weights, device, expected_model=config.model, advice=advice)
    thresholds, _ = run_thresholds(folder, config, model, device, config.batch_size,
                                   path=threshold_file)
    return TrainedRun(model, thresholds, config, folder, device)
