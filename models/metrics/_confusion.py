"""Validated true/false-positive counts at every distinct score: what ROC, PR and F1 share."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import ArrayLike, as_binary, as_map_stack, as_scores, check_same_shape
from ._ranking import ranked_sums

__all__ = ["ConfusionCounts", "confusion_counts", "image_counts", "pixel_counts"]

# What to do when the labels hold one class, by what the labels are of.
_ONE_CLASS_ADVICE = {
    "samples": "pass both normal and anomalous samples",
    "images": "evaluate on a test set with both normal and defective images",
    "pixels": "the masks must mark some pixels as defect and leave others normal: evaluate on "
    "a test set with both normal and defective images",
}


class ConfusionCounts(NamedTuple):
    """Cumulative integer counts over the scores taken from the highest down.

    Attributes:
        true_positives: ``[T]`` int64, anomalous samples scoring ``>= thresholds[t]``.
        false_positives: ``[T]`` int64, normal samples scoring ``>= thresholds[t]``.
        thresholds: ``[T]`` the distinct scores, decreasing.
        positives: the number of anomalous samples.
        negatives: the number of normal samples.
    """

    true_positives: Tensor
    false_positives: Tensor
    thresholds: Tensor
    positives: int
    negatives: int


def confusion_counts(scores: ArrayLike, labels: ArrayLike, metric: str,
                     samples: str = "samples") -> ConfusionCounts:
    """Validate scores and labels, then count true and false positives at every distinct score.

    Args:
        scores: scores of any shape, higher meaning more anomalous; no NaN.
        labels: binary labels (bool or 0/1) of the same shape, 1 meaning anomalous.
        metric: the metric's name, for the error message (``"image AUROC"``).
        samples: what the labels are of: ``"samples"``, ``"images"`` or ``"pixels"``; chooses
            the advice of the one-class error.

    Returns:
        The counts, on the device of ``scores``.

    Raises:
        ValueError: mismatched shapes, NaN scores, non-binary labels or a single class.
    """
    scores = as_scores(scores, "scores")
    labels = as_binary(labels, "labels")
    check_same_shape(scores, labels, "scores", "labels")
    if labels.device != scores.device:
        labels = labels.to(scores.device)
    scores, labels = scores.reshape(-1), labels.reshape(-1)
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        present = "anomalous (label 1)" if positives else "normal (label 0)"
        raise ValueError(
            f"{metric} is undefined when only one class is present: all {labels.numel()} "
            f"{samples} are {present}; {_ONE_CLASS_ADVICE[samples]}"
        )
    ranked = ranked_sums(scores, [labels])
    true_positives = ranked.sums[0]
    return ConfusionCounts(true_positives, ranked.counts - true_positives, ranked.thresholds,
                           positives, negatives)


def image_counts(scores: ArrayLike, labels: ArrayLike, metric: str) -> ConfusionCounts:
    """:func:`confusion_counts` of ``[N]`` image scores and labels.

    Raises:
        ValueError: scores not 1-D, or any error of :func:`confusion_counts`.
    """
    scores = torch.as_tensor(scores)
    if scores.ndim != 1:
        raise ValueError(
            f"image scores must have shape [N], got {tuple(scores.shape)}; "
            "reduce each anomaly map to one score first (e.g. maps.amax(dim=(-2, -1)))"
        )
    return confusion_counts(scores, labels, metric, "images")


def pixel_counts(maps: ArrayLike, masks: ArrayLike, metric: str) -> ConfusionCounts:
    """:func:`confusion_counts` of all pixels of ``[N, H, W]`` (or ``[N, 1, H, W]``) maps pooled.

    Raises:
        ValueError: a wrong map shape, or any error of :func:`confusion_counts`.
    """
    maps = as_map_stack(torch.as_tensor(maps), "maps")
    masks = as_map_stack(torch.as_tensor(masks), "masks")
    return confusion_counts(maps, masks, metric, "pixels")
