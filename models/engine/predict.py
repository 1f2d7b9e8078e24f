"""Prediction on new images: anomaly maps, overlays and a verdict per image, judged by the
run's thresholds (:mod:`.thresholds`), fitted on its normal training images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..base import AnomalyModel
from ..data import GOOD, IMAGE_SUFFIXES, Choice, DatasetError, read_image
from ..data.item import make_item
from ..errors import ConfigError
from .map_png import HIGH_KEY, LOW_KEY, MAP_PNG_MAX, write_map_png
from .thresholds import Thresholds
from .visualize import save_prediction_overlay

__all__ = [
    "ImageFiles",
    "OutputFormat",
    "Prediction",
    "find_images",
    "predict_images",
    "predictions_record",
]


class OutputFormat(Choice):
    """Which anomaly-map files ``flowkit predict`` writes (the overlay is always written)."""

    NPY = "npy"
    PNG = "png"
    BOTH = "both"


def _images_in(folder: Path, recursive: bool) -> list[Path]:
    """The image files in ``folder`` (and its sub-folders), sorted; hidden ones skipped."""
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        path for path in candidates
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def find_images(inputs: Sequence[str | Path], recursive: bool = False) -> list[tuple[Path, Path]]:
    """The image files named or held by ``inputs``, each with its output name.

    A file is taken whatever its name (reading it tells whether it is an image); a folder
    gives its files ending in one of :data:`~.data.IMAGE_SUFFIXES`, with ``recursive``
    those of its sub-folders too. A file's output name is its path relative to the folder
    it was found in (only its stem for a file named directly), without the suffix.

    Args:
        inputs: image files and folders.
        recursive: search sub-folders.

    Returns:
        ``(image file, output name)`` pairs in the order given, folders sorted.

    Raises:
        DatasetError: a path that does not exist, or a folder without images.
        ConfigError: two images that would get the same output name.
    """
    found: list[tuple[Path, Path]] = []
    for given in map(Path, inputs):
        if given.is_file():
            found.append((given, Path(given.stem)))
        elif given.is_dir():
            images = _images_in(given, recursive)
            if not images:
                hint = "" if recursive or not any(p.is_dir() for p in given.iterdir()) \
                    else "; pass --recursive to search its sub-folders"
                raise DatasetError(f"no images in {given}: expected files ending in "
                                   f"{', '.join(IMAGE_SUFFIXES)}{hint}")
            found += [(path, path.relative_to(given).with_suffix("")) for path in images]
        else:
            raise DatasetError(f"{given} does not exist; pass image files or folders")
    owners: dict[Path, Path] = {}
    for path, name in found:
        if name in owners:
            raise ConfigError(f"{owners[name]} and {path} would both be written as {name}; "
                              "predict them in separate runs, or pass their parent folder")
        owners[name] = path
    return found


class ImageFiles(Dataset[Tensor]):
    """Image files read as RGB (grayscale repeated, alpha dropped) and resized to a square."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths, self.size = list(paths), size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Tensor:
        path = self.paths[index]
        return make_item(read_image(path), None, GOOD, str(path), (self.size, self.size)).image


@dataclass(frozen=True)
class Prediction:
    """The result for one image.

    Attributes:
        image: the image file.
        score: its anomaly score.
        anomalous: whether the score exceeds the image threshold.
        files: what was written for it, by kind (``map_png``, ``map_npy``, ``overlay``), as
            paths relative to the output folder.
        map_png_range: the scale ``(low, high)`` of its map PNG (see :mod:`.map_png`);
            ``None`` without one.
    """

    image: str
    score: float
    anomalous: bool
    files: dict[str, str]
    map_png_range: tuple[float, float] | None = None


def _write_outputs(folder: Path, name: Path, image: Tensor, anomaly_map: Tensor, score: float,
                   thresholds: Thresholds, output: OutputFormat, source: Path) -> Prediction:
    """Write an image's map file(s) and overlay under ``folder``; its :class:`Prediction`."""
    scores = anomaly_map.reshape(anomaly_map.shape[-2:]).float().cpu().numpy()
    anomalous = score > thresholds.image
    files, png_range = {}, None
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    if output in (OutputFormat.PNG, OutputFormat.BOTH):
        files["map_png"] = f"{name}_map.png"
        png_range = write_map_png(folder / files["map_png"], scores, thresholds.map_range)
    if output in (OutputFormat.NPY, OutputFormat.BOTH):
        files["map_npy"] = f"{name}_map.npy"
        np.save(folder / files["map_npy"], scores.astype(np.float32))
    files["overlay"] = f"{name}_overlay.png"
    verdict = "ANOMALOUS" if anomalous else "normal"
    title = (f"{name}  score {score:.4g} {'>' if anomalous else '<='} "
             f"{thresholds.image:.4g}: {verdict}")
    save_prediction_overlay(folder / files["overlay"], image, anomaly_map,
                            thresholds.map_range, thresholds.pixel, title)
    return Prediction(str(source), score, anomalous, files, png_range)


def predict_images(
    model: AnomalyModel,
    images: Sequence[tuple[Path, Path]],
    folder: str | Path,
    thresholds: Thresholds,
    image_size: int,
    batch_size: int,
    device: torch.device,
    output: OutputFormat | str = OutputFormat.PNG,
    workers: int = 0,
    progress: bool = False,
) -> list[Prediction]:
    """Predict every image and write its outputs into ``folder``.

    Per image, under its output name ``NAME``: ``NAME_map.png`` (the map as a 16-bit PNG on
    the scale of :mod:`.map_png`, never clipped) and/or ``NAME_map.npy``
    (float32 ``[H, W]``), and ``NAME_overlay.png`` (the image, and the map over it with the
    region above the pixel threshold outlined). Maps are at ``image_size``.

    Args:
        model: the final model.
        images: ``(file, output name)`` pairs, as :func:`find_images` returns them.
        folder: where the files go (it must exist).
        thresholds: the run's thresholds.
        image_size: images are resized to ``image_size x image_size``.
        batch_size: images per batch.
        device: where the model runs.
        output: which map files to write.
        workers: data-loading worker processes.
        progress: show a tqdm progress bar.

    Returns:
        One :class:`Prediction` per image, in order.

    Raises:
        DatasetError: an image that cannot be read, named.
    """
    folder, output = Path(folder), OutputFormat(output)
    model.eval()
    loader = DataLoader(ImageFiles([path for path, _ in images], image_size),
                        batch_size=batch_size, num_workers=workers)
    predictions: list[Prediction] = []
    for batch in tqdm(loader, desc="predict", unit="batch", disable=not progress):
        maps, scores = model.predict(batch.to(device, non_blocking=True))
        for image, anomaly_map, score in zip(batch, maps, scores.tolist(), strict=True):
            path, name = images[len(predictions)]
            predictions.append(_write_outputs(folder, name, image, anomaly_map, score,
                                              thresholds, output, path))
    return predictions


def predictions_record(predictions: Sequence[Prediction], thresholds: Thresholds,
                       **about: Any) -> dict[str, Any]:
    """The content of ``predictions.json``: what was run, the thresholds and their rule, the
    16-bit map scale, and one record per image (with its map PNG's range)."""
    low, high = thresholds.map_range
    return {
        **about,
        "threshold": {
            **thresholds.to_json(),
            "rule": f"an image is anomalous when its score exceeds 'image', the "
                    f"{thresholds.quantile} quantile of the scores of the "
                    f"{thresholds.num_images} normal training images; the overlay outlines "
                    f"the map above 'pixel', the same quantile of their map maxima",
        },
        "display_range": [low, high],
        "map_png_scale": f"a 16-bit map PNG value v means the score low + v / {MAP_PNG_MAX} * "
                         "(high - low), with (low, high) the image's map_png_range (also in the "
                         f"PNG's text chunks {LOW_KEY}, {HIGH_KEY}): the display_range widened "
                         "to the map's own minimum and maximum, so no value is clipped",
        "images": [asdict(p) for p in predictions],
    }
