"""The best F1 score over all thresholds and the threshold reaching it (anomalib's adaptive one)."""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from ._checks import ArrayLike
from ._confusion import ConfusionCounts, confusion_counts, image_counts, pixel_counts

__all__ = ["F1Max", "f1_max", "image_f1_max", "pixel_f1_max"]

# Float64 F1 values within this relative distance of the largest are compared exactly.
_CANDIDATE_TOLERANCE = 1e-12


class F1Max(NamedTuple):
    """The largest F1 score and where it is reached.

    Attributes:
        f1: the F1 score, ``2 TP / (2 TP + FP + FN)``, in (0, 1].
        threshold: the score at which it is reached: samples scoring ``>= threshold`` are
            flagged. It is one of the scores; where several thresholds reach the same F1, the
            lowest (as anomalib's ``F1AdaptiveThreshold``).
    """

    f1: float
    threshold: float


def _best_f1(counts: ConfusionCounts) -> F1Max:
    """The exact maximum of ``2 TP / (TP + FP + P)`` over the thresholds of ``counts``.

    Float64 finds the candidates; fractions of the integer counts decide between them, so two
    thresholds whose F1 differ by less than float64 can tell (millions of pixels) are ordered
    right and equal ones are recognized as equal.
    """
    tp = counts.true_positives
    flagged_plus_positives = tp + counts.false_positives + counts.positives
    f1 = 2 * tp.double() / flagged_plus_positives.double()
    candidates = (f1 >= f1.max() * (1 - _CANDIDATE_TOLERANCE)).nonzero().squeeze(1)
    tp_list = tp[candidates].tolist()
    denominators = flagged_plus_positives[candidates].tolist()
    # Reversed: max() keeps the first of equal values, the one of the lowest threshold.
    best = max(reversed(range(len(tp_list))),
               key=lambda k: Fraction(2 * tp_list[k], denominators[k]))
    return F1Max(f1=2 * tp_list[best] / denominators[best],
                 threshold=float(counts.thresholds[candidates[best]]))


def f1_max(scores: ArrayLike, labels: ArrayLike) -> F1Max:
    """The best F1 score over all thresholds, exact and tie-aware, with its threshold.

    Every distinct score is tried as a threshold (samples with equal scores are flagged
    together); the F1 score at a threshold is ``2 TP / (2 TP + FP + FN)``. This is the adaptive
    threshold anomalib reports. It is chosen on the labelled data it is measured on, so it is
    an optimistic figure: flowkit's ``predict`` uses thresholds fitted on normal training
    images instead.

    Args:
        scores: scores of any shape, higher meaning more anomalous; no NaN.
        labels: binary labels (bool or 0/1) of the same shape, 1 meaning anomalous.

    Returns:
        The F1 score and the threshold that reaches it.

    Raises:
        ValueError: mismatched shapes, NaN scores, non-binary labels or a single class.

    Example:
        >>> import torch
        >>> f1_max(torch.tensor([0.125, 0.5, 0.375, 0.75]), torch.tensor([0, 0, 1, 1]))
        F1Max(f1=0.8, threshold=0.375)
    """
    return _best_f1(confusion_counts(scores, labels, "F1-max"))


def image_f1_max(scores: ArrayLike, labels: ArrayLike) -> F1Max:
    """Image-level :func:`f1_max`: one anomaly score and one label per image.

    Args:
        scores: ``[N]`` image scores; no NaN.
        labels: ``[N]`` image labels, 1 for a defective image.

    Returns:
        The F1 score and the image-score threshold that reaches it.

    Raises:
        ValueError: scores not 1-D, mismatched shapes, NaN, non-binary labels or one class.

    Example:
        >>> import torch
        >>> image_f1_max(torch.tensor([0.25, 0.75, 0.5]), torch.tensor([0, 1, 1]))
        F1Max(f1=1.0, threshold=0.5)
    """
    return _best_f1(image_counts(scores, labels, "image F1-max"))


def pixel_f1_max(maps: ArrayLike, masks: ArrayLike) -> F1Max:
    """Pixel-level :func:`f1_max` over all pixels of all images pooled together.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps; no NaN.
        masks: ground-truth masks of the same shape, 1 on defect pixels.

    Returns:
        The F1 score and the map threshold that reaches it.

    Raises:
        ValueError: a wrong or mismatched shape, NaN, non-binary masks, or masks that are all
            defect or all normal.

    Example:
        >>> import torch
        >>> masks = torch.zeros(2, 4, 4, dtype=torch.bool)
        >>> masks[1, 1:3, 1:3] = True
        >>> pixel_f1_max(masks.float(), masks)
        F1Max(f1=1.0, threshold=1.0)
    """
    return _best_f1(pixel_counts(maps, masks, "pixel F1-max"))
