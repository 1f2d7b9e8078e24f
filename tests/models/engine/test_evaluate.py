"""The evaluation's metrics: every key of METRIC_LABELS, each equal to scikit-learn's value or
to the metric's own function on the pooled maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from flowkit.models.engine.evaluate import AUPRO_KEY, METRIC_LABELS, Evaluation, compute_metrics
from flowkit.models.metrics import aupro, legacy_pro


def _evaluation(seed: int, num: int, size: int) -> Evaluation:
    """Random maps with ties (two decimals), masks with a defect in every odd image."""
    generator = torch.Generator().manual_seed(seed)
    masks = torch.zeros(num, 1, size, size, dtype=torch.bool)
    masks[1::2, :, size // 4 : size // 2, size // 4 : size // 2] = True
    maps = (torch.rand(num, 1, size, size, generator=generator) + 0.3 * masks).round(decimals=2)
    labels = masks.flatten(1).any(1).long()
    return Evaluation(maps, maps.flatten(1).amax(1), masks, labels, ["x"] * num,
                      [f"{i}.png" for i in range(num)], 1.0)


@settings(max_examples=10)
@given(st.integers(0, 2**16), st.integers(2, 6), st.sampled_from([4, 8, 12]))
def test_every_metric_equals_its_reference(seed: int, num: int, size: int) -> None:
    evaluation = _evaluation(seed, num, size)
    metrics = compute_metrics(evaluation)
    assert list(metrics) == list(METRIC_LABELS)
    scores, labels = evaluation.scores.numpy(), evaluation.labels.numpy()
    pixels, truth = evaluation.maps.numpy().ravel(), evaluation.masks.numpy().ravel()
    for level, (x, y) in {"image": (scores, labels), "pixel": (pixels, truth)}.items():
        assert metrics[f"{level}_auroc"] == pytest.approx(roc_auc_score(y, x), abs=1e-12)
        assert metrics[f"{level}_aupr"] == pytest.approx(average_precision_score(y, x),
                                                         abs=1e-12)
        threshold = metrics[f"{level}_f1_threshold"]
        assert threshold in set(x.tolist())
        assert metrics[f"{level}_f1_max"] == pytest.approx(f1_score(y, x >= threshold),
                                                           abs=1e-12)
        best = max(f1_score(y, x >= t) for t in np.unique(x))
        assert metrics[f"{level}_f1_max"] == pytest.approx(best, abs=1e-12)
    assert metrics[AUPRO_KEY] == aupro(evaluation.maps, evaluation.masks)
    assert metrics["legacy_pro"] == legacy_pro(evaluation.maps, evaluation.masks)
