"""AUROC: equality with scikit-learn, ties, invariances, low-precision and signed scores."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from flowkit.models.metrics import auroc, image_auroc, pixel_auroc, roc_curve

from .common import STRICTLY_INCREASING, hand_example, maps_and_masks, scored_labels

# ---------------------------------------------------------------- AUROC


@given(scored_labels())
def test_auroc_equals_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = data
    assert auroc(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-15
    )


@given(scored_labels())
def test_roc_curve_is_monotone_and_ends_at_corners(data: tuple[np.ndarray, np.ndarray]) -> None:
    curve = roc_curve(*data)
    assert curve.fpr[0] == curve.tpr[0] == 0 and curve.fpr[-1] == curve.tpr[-1] == 1
    assert bool((curve.fpr.diff() >= 0).all() and (curve.tpr.diff() >= 0).all())
    assert curve.thresholds[0] == math.inf and bool((curve.thresholds.diff()[1:] < 0).all())
    np.testing.assert_allclose(
        float(torch.trapezoid(curve.tpr, curve.fpr)), auroc(*data), rtol=1e-12
    )


@given(scored_labels(), st.sampled_from(STRICTLY_INCREASING))
def test_auroc_invariant_to_increasing_transforms(data, transform) -> None:
    scores, labels = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    assert auroc(transform(scores), labels) == auroc(scores, labels)


@given(scored_labels())
def test_auroc_of_negated_scores_is_complement(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    assert auroc(-scores, labels) == pytest.approx(1 - auroc(scores, labels), abs=1e-15)


@given(st.integers(1, 20), st.integers(1, 20))
def test_perfect_and_inverted_image_scores(num_normal: int, num_anomalous: int) -> None:
    labels = torch.cat([torch.zeros(num_normal), torch.ones(num_anomalous)])
    scores = labels + torch.rand(labels.shape) * 0.5
    assert image_auroc(scores, labels) == 1.0
    assert image_auroc(-scores, labels) == 0.0


def test_auroc_hand_computed_with_ties() -> None:
    # Pairs (anomalous > normal): 0.9 beats 5, 0.6 beats 4, 0.4 beats 3 and ties 1 -> 12.5 / 15.
    scores = torch.tensor([0.9, 0.4, 0.6, 0.8, 0.4, 0.1, 0.2, 0.3])
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    assert auroc(scores, labels) == 12.5 / 15


def test_auroc_accepts_low_precision_and_integer_scores() -> None:
    scores = torch.tensor([1, 3, 3, 2])
    labels = torch.tensor([0, 1, 0, 1])
    expected = roc_auc_score(labels.numpy(), scores.numpy())
    for dtype in (torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert auroc(scores.to(dtype), labels) == expected


def test_auroc_signed_zeros_and_infinities_are_ordered() -> None:
    scores = torch.tensor([-math.inf, -0.0, 0.0, -1e-30, 1e-30, math.inf])
    labels = torch.tensor([0, 1, 0, 0, 1, 1])
    # inf and 1e-30 beat all 3 normal scores; -0.0 ties 0.0 and beats -1e-30 and -inf.
    assert auroc(scores, labels) == 8.5 / 9


# ---------------------------------------------------------------- pixel AUROC


@given(maps_and_masks())
def test_pixel_auroc_equals_sklearn_on_pooled_pixels(data) -> None:
    maps, masks = data
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-15)
    assert pixel_auroc(maps[:, None], masks[:, None]) == pixel_auroc(maps, masks)


def test_pixel_auroc_hand_computed() -> None:
    assert pixel_auroc(*hand_example()) == pytest.approx(12.5 / 15, abs=1e-15)
