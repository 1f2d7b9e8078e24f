"""Exact ROC AUC: image-level (one score per image) and pixel-level (one score per pixel)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import ArrayLike
from ._confusion import ConfusionCounts, confusion_counts, image_counts, pixel_counts

__all__ = ["RocCurve", "auroc", "image_auroc", "pixel_auroc", "roc_curve"]


class RocCurve(NamedTuple):
    """A ROC curve, one point per distinct score plus the origin.

    Attributes:
        fpr: ``[T + 1]`` float64 false-positive rates, non-decreasing from 0 to 1.
        tpr: ``[T + 1]`` float64 true-positive rates, non-decreasing from 0 to 1.
        thresholds: ``[T + 1]`` the score at each point (a sample is positive when its score is
            ``>=`` the threshold); the first is ``+inf``.
    """

    fpr: Tensor
    tpr: Tensor
    thresholds: Tensor


def _with_origin(values: Tensor, first: float) -> Tensor:
    """``values`` as float64 with ``first`` in front."""
    out = values.new_full((values.numel() + 1,), first, dtype=torch.float64)
    out[1:] = values
    return out


def _area(counts: ConfusionCounts) -> float:
    """The area under the ROC curve of ``counts``, summed in integers and divided once."""
    tp, fp = counts.true_positives, counts.false_positives
    # The first trapezoid starts at the origin (0, 0).
    twice_area = fp[0] * tp[0] + ((fp[1:] - fp[:-1]) * (tp[1:] + tp[:-1])).sum()
    return int(twice_area) / (2 * counts.positives * counts.negatives)


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> RocCurve:
    """The exact ROC curve; tied scores form one step.

    Args:
        scores: scores of any shape, higher meaning more anomalous; no NaN.
        labels: binary labels (bool or 0/1) of the same shape, 1 meaning anomalous.

    Returns:
        The curve, on the device of ``scores``.

    Raises:
        ValueError: mismatched shapes, NaN scores, non-binary labels or a single class.

    Example:
        >>> curve = roc_curve(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0, 0, 1, 1]))
        >>> curve.fpr.tolist(), curve.tpr.tolist()
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0])
    """
    counts = confusion_counts(scores, labels, "ROC curve")
    return RocCurve(
        fpr=_with_origin(counts.false_positives, 0.0) / counts.negatives,
        tpr=_with_origin(counts.true_positives, 0.0) / counts.positives,
        thresholds=torch.cat([counts.thresholds.new_full((1,), float("inf")), counts.thresholds]),
    )


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Exact area under the ROC curve, equal to ``sklearn.metrics.roc_auc_score``.

    The trapezoids are summed in integer arithmetic and divided once, so the result is the
    correctly rounded value of

    .. math:: \\frac{1}{2PN} \\sum_t (FP_t - FP_{t-1}) (TP_t + TP_{t-1}),

    the probability that a random anomalous sample scores higher than a random normal one, ties
    counting one half.

    Args:
        scores: scores of any shape; no NaN.
        labels: binary labels of the same shape, 1 meaning anomalous.

    Returns:
        The AUROC in [0, 1].

    Raises:
        ValueError: mismatched shapes, NaN scores, non-binary labels or a single class.

    Example:
        >>> auroc(torch.tensor([0.1, 0.4, 0.4, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.875
    """
    return _area(confusion_counts(scores, labels, "AUROC"))


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level AUROC: one anomaly score and one label per image.

    Args:
        scores: ``[N]`` image scores; no NaN.
        labels: ``[N]`` image labels, 1 for a defective image.

    Returns:
        The AUROC in [0, 1].

    Raises:
        ValueError: scores not 1-D, mismatched shapes, NaN, non-binary labels or one class.

    Example:
        >>> image_auroc(torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0, 1, 1]))
        1.0
    """
    return _area(image_counts(scores, labels, "image AUROC"))


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel-level AUROC over all pixels of all images pooled together.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps; no NaN.
        masks: ground-truth masks of the same shape, 1 on defect pixels.

    Returns:
        The AUROC in [0, 1].

    Raises:
        ValueError: a wrong or mismatched shape, NaN, non-binary masks, or masks that are all
            defect or all normal.

    Example:
        >>> masks = torch.zeros(2, 4, 4, dtype=torch.bool)
        >>> masks[1, 1:3, 1:3] = True
        >>> pixel_auroc(masks.float() + 0.1 * torch.rand(2, 4, 4), masks)
        1.0
    """
    return _area(pixel_counts(maps, masks, "pixel AUROC"))
