"""Exact area under the precision-recall curve (average precision): image- and pixel-level."""

from __future__ import annotations

import torch

from ._checks import ArrayLike
from ._confusion import ConfusionCounts, confusion_counts, image_counts, pixel_counts

__all__ = ["aupr", "image_aupr", "pixel_aupr"]


def _average_precision(counts: ConfusionCounts) -> float:
    """The step-wise area of ``counts``: recall steps weighted by the precision where they end."""
    tp = counts.true_positives
    recall_steps = torch.diff(tp, prepend=tp.new_zeros(1))  # integers: new positives per step
    precision = tp.double() / (tp + counts.false_positives).double()
    return float((recall_steps.double() * precision).sum()) / counts.positives


def aupr(scores: ArrayLike, labels: ArrayLike) -> float:
    """Average precision, the step-wise area under the precision-recall curve.

    With the distinct scores ``t_1 > t_2 > ...`` as thresholds (a sample is flagged when its
    score is ``>= t_k``), precision ``P_k`` and recall ``R_k``,

    .. math:: \\mathrm{AP} = \\sum_k (R_k - R_{k-1}) P_k, \\qquad R_0 = 0,

    the definition of ``sklearn.metrics.average_precision_score`` (no interpolation between
    points, which would be optimistic). Tied scores enter together, as one step. The recall
    steps are integer counts; the sum is in float64.

    Args:
        scores: scores of any shape, higher meaning more anomalous; no NaN.
        labels: binary labels (bool or 0/1) of the same shape, 1 meaning anomalous.

    Returns:
        The average precision in (0, 1]; a random ranking scores about the anomalous fraction.

    Raises:
        ValueError: mismatched shapes, NaN scores, non-binary labels or a single class.

    Example:
        >>> aupr(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
        0.8333333333333333

    References:
        Davis and Goadrich, "The Relationship Between Precision-Recall and ROC Curves",
        ICML 2006 (why the precision-recall curve is not interpolated linearly).
    """
    return _average_precision(confusion_counts(scores, labels, "AUPR"))


def image_aupr(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image-level :func:`aupr`: one anomaly score and one label per image.

    Args:
        scores: ``[N]`` image scores; no NaN.
        labels: ``[N]`` image labels, 1 for a defective image.

    Returns:
        The average precision in (0, 1].

    Raises:
        ValueError: scores not 1-D, mismatched shapes, NaN, non-binary labels or one class.

    Example:
        >>> image_aupr(torch.tensor([0.2, 0.9, 0.5]), torch.tensor([0, 1, 1]))
        1.0
    """
    return _average_precision(image_counts(scores, labels, "image AUPR"))


def pixel_aupr(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel-level :func:`aupr` over all pixels of all images pooled together.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps; no NaN.
        masks: ground-truth masks of the same shape, 1 on defect pixels.

    Returns:
        The average precision in (0, 1].

    Raises:
        ValueError: a wrong or mismatched shape, NaN, non-binary masks, or masks that are all
            defect or all normal.

    Example:
        >>> masks = torch.zeros(2, 4, 4, dtype=torch.bool)
        >>> masks[1, 1:3, 1:3] = True
        >>> pixel_aupr(masks.float() + 0.1 * torch.rand(2, 4, 4), masks)
        1.0
    """
    return _average_precision(pixel_counts(maps, masks, "pixel AUPR"))
