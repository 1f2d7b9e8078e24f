"""F1-max and its threshold: an exact brute-force reference, scikit-learn, ties, exactness."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import f1_score, precision_recall_curve

from flowkit.models.metrics import F1Max, f1_max, image_f1_max, pixel_f1_max
from flowkit.models.metrics._confusion import ConfusionCounts
from flowkit.models.metrics.f1 import _best_f1

from .common import STRICTLY_INCREASING, maps_and_masks, scored_labels


def _reference_f1_max(scores: np.ndarray, labels: np.ndarray) -> tuple[Fraction, float]:
    """Every distinct score as a threshold, F1 as an exact fraction; ties to the lowest one."""
    best, best_threshold = Fraction(-1), None
    for threshold in sorted(set(scores.tolist()), reverse=True):
        flagged = scores >= threshold
        true_positives = int((flagged & labels).sum())
        f1 = Fraction(2 * true_positives, int(flagged.sum()) + int(labels.sum()))
        if f1 >= best:
            best, best_threshold = f1, threshold
    return best, best_threshold


@given(scored_labels())
def test_f1_max_equals_brute_force_reference(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = data
    best, threshold = _reference_f1_max(scores, labels)
    assert f1_max(scores, labels) == F1Max(f1=float(best), threshold=threshold)
    assert image_f1_max(scores, labels) == f1_max(scores, labels)


@given(scored_labels())
def test_f1_max_agrees_with_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = data
    result = f1_max(scores, labels)
    assert f1_score(labels, scores >= result.threshold) == pytest.approx(result.f1, abs=1e-12)
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore"):  # precision = recall = 0: F1 is 0
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    assert f1.max() == pytest.approx(result.f1, abs=1e-12)


@given(maps_and_masks())
def test_pixel_f1_max_equals_the_reference_on_pooled_pixels(data) -> None:
    maps, masks = data
    best, threshold = _reference_f1_max(maps.ravel(), masks.ravel())
    assert pixel_f1_max(maps, masks) == F1Max(f1=float(best), threshold=threshold)
    assert pixel_f1_max(maps[:, None], masks[:, None]) == pixel_f1_max(maps, masks)


@given(scored_labels(), st.sampled_from(STRICTLY_INCREASING))
def test_f1_max_moves_its_threshold_with_increasing_transforms(data, transform) -> None:
    scores, labels = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    result = f1_max(scores, labels)
    transformed = f1_max(transform(scores), labels)
    assert transformed.f1 == result.f1
    assert transformed.threshold == float(transform(torch.tensor(result.threshold).double()))


def test_f1_max_hand_computed_with_ties() -> None:
    # 3 anomalous. Thresholds 0.9: F1 = 2/4; 0.8: 2/5; 0.6: 4/6; 0.4 (the tie enters whole,
    # 3 TP and 2 FP): 6/8, the best; 0.3: 6/9 ...
    scores = torch.tensor([0.9, 0.4, 0.6, 0.8, 0.4, 0.1, 0.2, 0.3], dtype=torch.float64)
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    assert f1_max(scores, labels) == F1Max(f1=0.75, threshold=0.4)


def test_equal_f1_goes_to_the_lowest_threshold() -> None:
    # Threshold 3: 1 TP, F1 = 2/3; threshold 1: 2 TP and 2 FP, F1 = 4/6, the same value.
    scores = torch.tensor([3.0, 2.0, 1.0, 1.0])
    labels = torch.tensor([1, 0, 1, 0])
    assert f1_max(scores, labels) == F1Max(f1=2 / 3, threshold=1.0)


def test_f1_values_that_float64_cannot_tell_apart_are_ordered_exactly() -> None:
    # 2a / (a + P) exceeds 2(a + 1) / (a + 3 + P) by about 1e-19: equal in float64, so a float
    # argmax would tie them and pick the lower threshold. Billions of samples: counts only.
    a, positives = 10**9, 2 * 10**9 - 1
    assert 2 * a / (a + positives) == 2 * (a + 1) / (a + 3 + positives)
    counts = ConfusionCounts(
        true_positives=torch.tensor([a, a + 1]),
        false_positives=torch.tensor([0, 2]),
        thresholds=torch.tensor([2.0, 1.0]),
        positives=positives,
        negatives=10,
    )
    assert _best_f1(counts).threshold == 2.0
