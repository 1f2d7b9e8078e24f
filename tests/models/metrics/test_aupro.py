"""AUPRO: the MVTec protocol by brute force, bounds, invariances, truncation, regions."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.models.metrics import DEFAULT_FPR_LIMIT, aupro, pro_curve

from .common import STRICTLY_INCREASING, hand_example, maps_and_masks, reference_regions

FPR_LIMITS = st.sampled_from([0.05, 0.25, DEFAULT_FPR_LIMIT, 0.5, 0.999, 1.0])


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """The MVTec protocol by brute force: one binary map per distinct score, looped regions."""
    regions, normal = reference_regions(masks), ~masks
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        flagged = maps >= threshold
        fpr = (flagged & normal).sum() / normal.sum()
        overlaps = [(flagged[i] & region).sum() / region.sum() for i, region in regions]
        points.append((fpr, sum(overlaps) / len(overlaps)))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            x1, y1 = fpr_limit, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


@given(maps_and_masks(), FPR_LIMITS)
def test_aupro_equals_brute_force_reference(data, fpr_limit: float) -> None:
    maps, masks = data
    expected = _reference_aupro(maps, masks, fpr_limit)
    assert aupro(maps, masks, fpr_limit) == pytest.approx(expected, abs=1e-12)


@given(maps_and_masks(), FPR_LIMITS)
def test_aupro_is_bounded(data, fpr_limit: float) -> None:
    assert 0.0 <= aupro(*data, fpr_limit=fpr_limit) <= 1.0


@given(maps_and_masks(), FPR_LIMITS, st.sampled_from(STRICTLY_INCREASING))
def test_aupro_invariant_to_increasing_transforms(data, fpr_limit, transform) -> None:
    maps, masks = torch.from_numpy(data[0]).double(), data[1]
    assert aupro(transform(maps), masks, fpr_limit) == aupro(maps, masks, fpr_limit)


@given(maps_and_masks(), FPR_LIMITS)
def test_aupro_perfect_and_inverted_maps(data, fpr_limit: float) -> None:
    masks = torch.from_numpy(data[1])
    # Per-pixel weights 1 / (R |r|) add up to 1 only to within rounding.
    assert aupro(masks.float(), masks, fpr_limit) == pytest.approx(1.0, abs=1e-12)
    assert aupro(-masks.float(), masks, fpr_limit) == 0.0


@given(maps_and_masks())
def test_pro_curve_is_monotone_from_origin_to_corner(data) -> None:
    curve = pro_curve(*data)
    assert curve.fpr[0] == curve.pro[0] == 0
    assert curve.fpr[-1] == 1 and curve.pro[-1] == pytest.approx(1.0, abs=1e-12)
    assert bool((curve.fpr.diff() >= 0).all() and (curve.pro.diff() >= 0).all())


@given(maps_and_masks(), FPR_LIMITS)
def test_truncated_pro_curve_is_a_prefix_reaching_the_limit(data, fpr_limit: float) -> None:
    whole, truncated = pro_curve(*data), pro_curve(*data, fpr_limit=fpr_limit)
    size = truncated.fpr.numel()
    torch.testing.assert_close(truncated.fpr, whole.fpr[:size], rtol=0, atol=0)
    torch.testing.assert_close(truncated.pro, whole.pro[:size], rtol=0, atol=1e-15)
    assert truncated.fpr[-1] >= fpr_limit


def test_aupro_hand_computed() -> None:
    # Curve: (0, 0) (0, .25) (.2, .25) (.2, .75) (.4, 1) (.6, 1) (.8, 1) (1, 1).
    # To 0.3: .2 * .25 + .1 * (.75 + .875) / 2 = .13125, / .3 = .4375. Whole: .825.
    maps, masks = hand_example()
    assert aupro(maps, masks) == pytest.approx(0.4375, abs=1e-15)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.825, abs=1e-15)


def test_pro_regions_are_eight_connected_and_per_image() -> None:
    # Image 0: one 8-connected region of 3 pixels (two regions if 4-connected); image 1: a
    # region of 2 at the same place (one region of 5 if components crossed images).
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    masks[:, 1, 1] = masks[:, 2, 2] = True
    masks[0, 2, 3] = True
    maps = torch.zeros(2, 4, 4)
    maps[0, 1, 1] = 1.0
    # 8-connected, per image: (1/3 + 0) / 2. (4-connected: 1/4; across images: 1/5.)
    assert pro_curve(maps, masks).pro[1] == pytest.approx(1 / 6)
