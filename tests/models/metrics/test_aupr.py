"""AUPR (average precision): equality with scikit-learn, ties, invariances, hand-computed."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score

from flowkit.models.metrics import aupr, image_aupr, pixel_aupr

from .common import STRICTLY_INCREASING, maps_and_masks, scored_labels


@given(scored_labels())
def test_aupr_equals_sklearn(data: tuple[np.ndarray, np.ndarray]) -> None:
    scores, labels = data
    expected = average_precision_score(labels, scores)
    assert aupr(torch.from_numpy(scores), torch.from_numpy(labels)) == pytest.approx(
        expected, abs=1e-12
    )
    assert image_aupr(scores, labels) == aupr(scores, labels)


@given(maps_and_masks())
def test_pixel_aupr_equals_sklearn_on_pooled_pixels(data) -> None:
    maps, masks = data
    expected = average_precision_score(masks.ravel(), maps.ravel())
    assert pixel_aupr(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert pixel_aupr(maps[:, None], masks[:, None]) == pixel_aupr(maps, masks)


@given(scored_labels(), st.sampled_from(STRICTLY_INCREASING))
def test_aupr_invariant_to_increasing_transforms(data, transform) -> None:
    scores, labels = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    assert aupr(transform(scores), labels) == aupr(scores, labels)


@given(scored_labels())
def test_aupr_is_bounded(data) -> None:
    assert 0.0 < aupr(*data) <= 1.0


@given(st.integers(1, 20), st.integers(1, 20))
def test_perfect_ranking_has_aupr_one(num_normal: int, num_anomalous: int) -> None:
    labels = torch.cat([torch.zeros(num_normal), torch.ones(num_anomalous)])
    scores = labels + torch.rand(labels.shape) * 0.5
    assert image_aupr(scores, labels) == 1.0
    # Inverted: the k-th anomalous sample is found after all normal ones.
    expected = sum(k / (num_normal + k) for k in range(1, num_anomalous + 1)) / num_anomalous
    assert image_aupr(-scores, labels) == pytest.approx(expected, abs=1e-15)


def test_aupr_hand_computed_with_ties() -> None:
    # Thresholds 0.9 (1 TP, 0 FP), 0.8 (1, 1), 0.6 (2, 1), 0.4 (3, 2: the tie enters as one
    # step, precision 3/5, not 3/4): AP = (1 + 2/3 + 3/5) / 3 = 34/45.
    scores = torch.tensor([0.9, 0.4, 0.6, 0.8, 0.4, 0.1, 0.2, 0.3])
    labels = torch.tensor([1, 1, 1, 0, 0, 0, 0, 0])
    assert aupr(scores, labels) == pytest.approx(34 / 45, abs=1e-15)


def test_aupr_accepts_low_precision_and_integer_scores() -> None:
    scores = torch.tensor([1, 3, 3, 2])
    labels = torch.tensor([0, 1, 0, 1])
    expected = average_precision_score(labels.numpy(), scores.numpy())
    for dtype in (torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64):
        assert aupr(scores.to(dtype), labels) == pytest.approx(expected, abs=1e-15)
