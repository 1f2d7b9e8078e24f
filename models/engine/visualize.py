"""Pictures of a run: heat-map overlays of test images and of predictions, and the ROC and PRO
curves.

Drawn with matplotlib's object-oriented API on the Agg canvas: no display, no pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from torch import Tensor
from torch.utils.data import Dataset

from ..data import GOOD, Item
from ..metrics import DEFAULT_FPR_LIMIT, ProCurve, RocCurve, pro_curve, roc_curve
from .evaluate import AUPRO_KEY, Evaluation

__all__ = [
    "COLORMAP",
    "EXAMPLES_PER_DEFECT",
    "MAP_ALPHA",
    "MAP_UPPER_QUANTILE",
    "OUTLINE_COLOR",
    "map_value_range",
    "save_curves",
    "save_heatmaps",
    "save_overlay",
    "save_prediction_overlay",
    "save_pro_plot",
    "save_roc_plot",
    "select_examples",
]

COLORMAP = "inferno"
"""Perceptually uniform, and readable in grayscale."""

MAP_ALPHA = 0.55
"""Opacity of the anomaly map over the image."""

OUTLINE_COLOR = "#00e5ff"
"""Cyan: the ground-truth outline stands out against the inferno map."""

EXAMPLES_PER_DEFECT = 2
"""Heat maps written per defect type (normal images count as one type)."""

MAP_UPPER_QUANTILE = 0.999
"""The brightest colour of the heat maps is this quantile of all map pixels."""

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 weights
_QUANTILE_SAMPLES = 1 << 20
_MIN_RANGE = 1e-12  # a constant map still gets a valid colour scale
_DPI = 100
_PANEL_INCHES = 3.0
_COLORBAR_INCHES = 1.0  # the colour bar and its tick labels, right of the panels
_MAX_CURVE_POINTS = 2000  # a plotted curve is thinned to this many points


def _outline(axes: Axes, values: np.ndarray, level: float) -> None:
    """Draw the boundary of the region where ``values`` exceed ``level``."""
    above = values > level
    if above.any() and not above.all():
        axes.contour(values.astype(np.float32), levels=[level], colors=[OUTLINE_COLOR],
                     linewidths=1.2)


def _save(figure: Figure, path: str | Path) -> Path:
    """Render a figure to a PNG file (Agg, chosen by the suffix), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=_DPI)
    return path


def _as_arrays(image: Tensor, anomaly_map: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The image as ``[H, W, 3]`` RGB and ``[H, W]`` gray, and the map as ``[H, W]``."""
    pixels = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    scores = anomaly_map.detach().float().reshape(image.shape[-2:]).cpu().numpy()
    return pixels, pixels @ _LUMA, scores


def _figure(names: Sequence[str], value_range: tuple[float, float],
            title: str) -> tuple[Figure, list[Axes], Axes]:
    """One panel per name side by side, titled, and a colour bar of the map on the right.

    Returns:
        The figure, its panels, and the colour bar's axes.
    """
    width = len(names) * _PANEL_INCHES + _COLORBAR_INCHES
    figure = Figure(figsize=(width, _PANEL_INCHES + 0.6))
    right = 1 - _COLORBAR_INCHES / width
    figure.subplots_adjust(left=0.01, right=right, bottom=0.02, top=0.86, wspace=0.04)
    panels = list(figure.subplots(1, len(names)))
    for axes, name in zip(panels, names, strict=True):
        axes.set_title(name, fontsize=10)
        axes.set_axis_off()
    bar = figure.add_axes((right + 0.1 / width, 0.06, 0.15 / width, 0.76))
    figure.colorbar(ScalarMappable(Normalize(*value_range), COLORMAP), cax=bar)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure, panels, bar


def _draw_map(axes: Axes, gray: np.ndarray, scores: np.ndarray,
              value_range: tuple[float, float]) -> None:
    """The map in :data:`COLORMAP` with :data:`MAP_ALPHA` over the grayscale image (so the
    colours read as the colour bar says)."""
    axes.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes.imshow(scores, cmap=COLORMAP, alpha=MAP_ALPHA, vmin=value_range[0],
                vmax=value_range[1], interpolation="bilinear")


def save_overlay(path: str | Path, image: Tensor, mask: Tensor, anomaly_map: Tensor,
                 value_range: tuple[float, float], title: str = "") -> Path:
    """Save three panels side by side: the image, the ground truth, the anomaly map.

    The ground truth is the image with the outline of the defect mask; the anomaly map is
    drawn in :data:`COLORMAP` with :data:`MAP_ALPHA` over a grayscale copy of the image, with
    the same outline. All maps of a run share one colour scale, so overlays compare across
    images.

    Args:
        path: the PNG file to write.
        image: ``[3, H, W]`` in [0, 1].
        mask: ``[1, H, W]`` or ``[H, W]`` ground truth (non-zero on defects).
        anomaly_map: ``[1, H, W]`` or ``[H, W]`` scores.
        value_range: the scores drawn as the darkest and the brightest colour.
        title: a line above the panels.

    Returns:
        ``path`` as a ``Path``.
    """
    pixels, gray, scores = _as_arrays(image, anomaly_map)
    defect = mask.detach().float().reshape(image.shape[-2:]).cpu().numpy()
    figure, panels, _ = _figure(("image", "ground truth", "anomaly map"), value_range, title)
    panels[0].imshow(pixels, interpolation="nearest")
    panels[1].imshow(pixels, interpolation="nearest")
    _draw_map(panels[2], gray, scores, value_range)
    for axes in panels[1:]:
        _outline(axes, defect, 0.5)
    return _save(figure, path)


def save_prediction_overlay(path: str | Path, image: Tensor, anomaly_map: Tensor,
                            value_range: tuple[float, float], threshold: float,
                            title: str = "") -> Path:
    """Save two panels side by side: the image, and the anomaly map with the outline of the
    region above ``threshold`` (also marked on the colour bar).

    Args:
        path: the PNG file to write.
        image: ``[3, H, W]`` in [0, 1].
        anomaly_map: ``[1, H, W]`` or ``[H, W]`` scores.
        value_range: the scores drawn as the darkest and the brightest colour.
        threshold: the pixel threshold; the region above it is outlined.
        title: a line above the panels.

    Returns:
        ``path`` as a ``Path``.
    """
    pixels, gray, scores = _as_arrays(image, anomaly_map)
    figure, panels, bar = _figure(("image", f"anomaly map, outline > {threshold:.4g}"),
                                  value_range, title)
    panels[0].imshow(pixels, interpolation="nearest")
    _draw_map(panels[1], gray, scores, value_range)
    _outline(panels[1], scores, threshold)
    bar.axhline(threshold, color=OUTLINE_COLOR, linewidth=2)
    return _save(figure, path)


def map_value_range(maps: Tensor) -> tuple[float, float]:
    """The colour scale of a run's heat maps: the lowest score to the
    :data:`MAP_UPPER_QUANTILE` quantile of all pixels (a few extreme pixels would darken
    every other map), estimated on at most :data:`_QUANTILE_SAMPLES` evenly spaced pixels.

    Example:
        >>> low, high = map_value_range(torch.arange(11.0).reshape(1, 1, 1, 11))
        >>> low, round(high, 4)
        (0.0, 9.99)
    """
    values = maps.detach().flatten().float()
    sample = values[:: max(1, values.numel() // _QUANTILE_SAMPLES)]
    low, high = float(values.min()), float(torch.quantile(sample, MAP_UPPER_QUANTILE))
    return low, max(high, low + _MIN_RANGE)


def select_examples(defects: Sequence[str], per_defect: int = EXAMPLES_PER_DEFECT) -> list[int]:
    """The first ``per_defect`` images of each defect type, normal images first.

    Example:
        >>> select_examples(["good", "good", "good", "hole", "scratch"], per_defect=2)
        [0, 1, 3, 4]
    """
    chosen: dict[str, list[int]] = {GOOD: []}
    for index, defect in enumerate(defects):
        group = chosen.setdefault(defect, [])
        if len(group) < per_defect:
            group.append(index)
    return [index for group in chosen.values() for index in group]


def save_heatmaps(folder: str | Path, dataset: Dataset[Item], evaluation: Evaluation,
                  per_defect: int = EXAMPLES_PER_DEFECT) -> list[Path]:
    """Write overlays of a few test images of each defect type, on the colour scale of
    :func:`map_value_range`.

    Args:
        folder: where the PNGs go, named ``<defect>_<index>.png``.
        dataset: the test images, in the order of ``evaluation``.
        evaluation: the maps and scores.
        per_defect: images per defect type.

    Returns:
        The files written.
    """
    value_range = map_value_range(evaluation.maps)
    written = []
    for index in select_examples(evaluation.defects, per_defect):
        item = dataset[index]
        defect = evaluation.defects[index]
        title = f"{item.path}  score {float(evaluation.scores[index]):.4g}"
        written.append(save_overlay(Path(folder) / f"{defect}_{index:04d}.png", item.image,
                                    item.mask, evaluation.maps[index], value_range, title))
    return written


def _thin(x: Tensor, y: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """At most :data:`_MAX_CURVE_POINTS` evenly spaced points of a curve, the ends kept."""
    count = x.numel()
    keep = torch.linspace(0, count - 1, min(count, _MAX_CURVE_POINTS)).round().long()
    return x[keep].cpu().numpy(), y[keep].cpu().numpy()


def _curve_figure(x_label: str, y_label: str) -> tuple[Figure, Axes]:
    """A square figure with one set of axes over the unit square."""
    figure = Figure(figsize=(4.5, 4.5), layout="constrained")
    axes = figure.subplots()
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.01)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.grid(alpha=0.3)
    return figure, axes


def save_roc_plot(path: str | Path, curves: dict[str, tuple[RocCurve, float]]) -> Path:
    """Plot ROC curves, each labelled with its AUROC.

    Args:
        path: the PNG file to write.
        curves: by name (e.g. ``"image"``, ``"pixel"``), the curve and its area.

    Returns:
        ``path`` as a ``Path``.
    """
    figure, axes = _curve_figure("false-positive rate", "true-positive rate")
    axes.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance")
    for name, (curve, area) in curves.items():
        axes.plot(*_thin(curve.fpr, curve.tpr), linewidth=1.5, label=f"{name} AUROC {area:.3f}")
    axes.legend(loc="lower right")
    axes.set_title("ROC")
    return _save(figure, path)


def save_pro_plot(path: str | Path, curve: ProCurve, area: float,
                  fpr_limit: float = DEFAULT_FPR_LIMIT) -> Path:
    """Plot the whole PRO curve, shading the part integrated by AUPRO up to ``fpr_limit``.

    Args:
        path: the PNG file to write.
        curve: the full PRO curve.
        area: the normalized AUPRO up to ``fpr_limit``.
        fpr_limit: where the integration stops.

    Returns:
        ``path`` as a ``Path``.
    """
    figure, axes = _curve_figure("false-positive rate (normal pixels)", "per-region overlap")
    fpr, pro = _thin(curve.fpr, curve.pro)
    axes.plot(fpr, pro, linewidth=1.5, label=f"AUPRO@{fpr_limit} {area:.3f}")
    inside = fpr <= fpr_limit
    axes.fill_between(fpr[inside], pro[inside], alpha=0.25)
    axes.axvline(fpr_limit, color="0.4", linestyle="--", linewidth=1)
    axes.legend(loc="lower right")
    axes.set_title("PRO")
    return _save(figure, path)


def save_curves(folder: str | Path, evaluation: Evaluation,
                metrics: dict[str, float]) -> list[Path]:
    """Write ``roc.png`` (image and pixel level) and ``pro.png`` for an evaluation.

    Args:
        folder: where the PNGs go.
        evaluation: the maps, scores and ground truth.
        metrics: the areas, as :func:`~flowkit.models.evaluate.compute_metrics` returns them.

    Returns:
        The files written.
    """
    folder = Path(folder)
    roc = {
        "image": (roc_curve(evaluation.scores, evaluation.labels), metrics["image_auroc"]),
        "pixel": (roc_curve(evaluation.maps.flatten(), evaluation.masks.flatten()),
                  metrics["pixel_auroc"]),
    }
    return [
        save_roc_plot(folder / "roc.png", roc),
        save_pro_plot(folder / "pro.png", pro_curve(evaluation.maps, evaluation.masks),
                      metrics[AUPRO_KEY]),
    ]
