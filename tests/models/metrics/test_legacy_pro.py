"""The legacy full-range PRO of the PyramidFlow paper against its official evaluation loop."""

import numpy as np
import pytest
from hypothesis import assume, given

from flowkit.models.metrics import LEGACY_PRO_STEPS, aupro, legacy_pro, legacy_pro_curve

from .common import hand_example, maps_and_masks, reference_regions


def _reference_legacy_pro(maps: np.ndarray, masks: np.ndarray) -> float:
    """The PyramidFlow evaluation loop: 200 strict thresholds on min-max normalized maps."""
    maps = maps.astype(np.float32)
    normalized = (maps - maps.min()) / (maps.max() - maps.min())
    regions, normal = reference_regions(masks), ~masks
    fprs, pros = [], []
    for k in range(LEGACY_PRO_STEPS):
        flagged = normalized > np.float32(k) * np.float32(1.0 / LEGACY_PRO_STEPS)
        fprs.append((flagged & normal).sum() / normal.sum())
        pros.append(np.mean([(flagged[i] & region).sum() / region.sum() for i, region in regions]))
    return abs(float(np.trapezoid(pros, fprs)))


@given(maps_and_masks())
def test_legacy_pro_equals_the_official_loop(data) -> None:
    maps, masks = data
    assume(maps.min() < maps.max())
    assert legacy_pro(maps, masks) == pytest.approx(_reference_legacy_pro(maps, masks), abs=1e-12)


def test_legacy_pro_hand_computed() -> None:
    # Normalized, the scores sit at 0, 1/8, ... : the grid never reaches FPR 1 (the minimum
    # normal pixel is never flagged), so the last 0.2 of the full area (.825) is missing.
    maps, masks = hand_example()
    assert legacy_pro(maps, masks) == pytest.approx(0.625, abs=1e-6)
    curve = legacy_pro_curve(maps, masks)
    assert curve.fpr.numel() == LEGACY_PRO_STEPS and bool((curve.fpr.diff() >= 0).all())


def test_legacy_pro_of_a_perfect_binary_map_is_zero() -> None:
    # Every threshold flags exactly the defects: one point at FPR 0, no area. AUPRO says 1.
    masks = hand_example()[1]
    assert legacy_pro(masks.float(), masks) == 0.0
    assert aupro(masks.float(), masks) == 1.0
