"""Properties of the metrics: sklearn equality, brute-force PRO references, invariances, errors."""

import math
import time

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label
from sklearn.metrics import roc_auc_score

from flowkit.models.metrics import (
    DEFAULT_FPR_LIMIT,
    LEGACY_PRO_STEPS,
    aupro,
    auroc,
    image_auroc,
    legacy_pro,
    legacy_pro_curve,
    pixel_auroc,
    pro_curve,
    roc_curve,
)

# ---------------------------------------------------------------- strategies

# Few distinct values, so that ties are frequent.
TIED_SCORES = st.integers(min_value=-6, max_value=6)


@st.composite
def scored_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores (with ties) and binary labels containing both classes."""
    n = draw(st.integers(min_value=2, max_value=40))
    scores = draw(arrays(np.float64, n, elements=TIED_SCORES.map(float)))
    labels = draw(arrays(np.bool_, n).filter(lambda lab: 0 < lab.sum() < lab.size))
    return scores, labels


@st.composite
def maps_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Tiny maps with tied scores and masks with at least one defect and one normal pixel."""
    num = draw(st.integers(min_value=1, max_value=3))
    height, width = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    shape = (num, height, width)
    maps = draw(arrays(np.float32, shape, elements=TIED_SCORES.map(float)))
    masks = draw(arrays(np.bool_, shape).filter(lambda m: 0 < m.sum() < m.size))
    return maps, masks


FPR_LIMITS = st.sampled_from([0.05, 0.25, DEFAULT_FPR_LIMIT, 0.5, 0.999, 1.0])

STRICTLY_INCREASING = [
    lambda x: 3.0 * x + 7.0,
    lambda x: x**3 + x,
    lambda x: torch.exp(x / 4),
    torch.atan,
]

# ---------------------------------------------------------------- slow references


def _reference_regions(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(image index, region mask) for every 8-connected region, labelled image by image."""
    regions = []
    for index, mask in enumerate(masks):
        labelled = label(mask, connectivity=2)
        regions += [(index, labelled == k) for k in range(1, labelled.max() + 1)]
    return regions


def _reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """The MVTec protocol by brute force: one binary map per distinct score, looped regions."""
    regions, normal = _reference_regions(masks), ~masks
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


def _reference_legacy_pro(maps: np.ndarray, masks: np.ndarray) -> float:
    """The PyramidFlow evaluation loop: 200 strict thresholds on min-max normalized maps."""
    maps = maps.astype(np.float32)
    normalized = (maps - maps.min()) / (maps.max() - maps.min())
    regions, normal = _reference_regions(masks), ~masks
    fprs, pros = [], []
    for k in range(LEGACY_PRO_STEPS):
        flagged = normalized > np.float32(k) * np.float32(1.0 / LEGACY_PRO_STEPS)
        fprs.append((flagged & normal).sum() / normal.sum())
        pros.append(np.mean([(flagged[i] & region).sum() / region.sum() for i, region in regions]))
    return abs(float(np.trapezoid(pros, fprs)))


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


# ---------------------------------------------------------------- AUPRO


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


def _hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two regions (sizes 2 and 1), five normal pixels, a tie across classes at 0.4."""
    maps = torch.tensor([[[0.9, 0.4, 0.8, 0.4], [0.1, 0.2, 0.3, 0.6]]])
    masks = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 1]]])
    return maps, masks


def test_aupro_hand_computed() -> None:
    # Curve: (0, 0) (0, .25) (.2, .25) (.2, .75) (.4, 1) (.6, 1) (.8, 1) (1, 1).
    # To 0.3: .2 * .25 + .1 * (.75 + .875) / 2 = .13125, / .3 = .4375. Whole: .825.
    maps, masks = _hand_example()
    assert aupro(maps, masks) == pytest.approx(0.4375, abs=1e-15)
    assert aupro(maps, masks, fpr_limit=1.0) == pytest.approx(0.825, abs=1e-15)
    assert pixel_auroc(maps, masks) == pytest.approx(12.5 / 15, abs=1e-15)


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


# ---------------------------------------------------------------- legacy PRO


@given(maps_and_masks())
def test_legacy_pro_equals_the_official_loop(data) -> None:
    maps, masks = data
    assume(maps.min() < maps.max())
    assert legacy_pro(maps, masks) == pytest.approx(_reference_legacy_pro(maps, masks), abs=1e-12)


def test_legacy_pro_hand_computed() -> None:
    # Normalized, the scores sit at 0, 1/8, ... : the grid never reaches FPR 1 (the minimum
    # normal pixel is never flagged), so the last 0.2 of the full area (.825) is missing.
    maps, masks = _hand_example()
    assert legacy_pro(maps, masks) == pytest.approx(0.625, abs=1e-6)
    curve = legacy_pro_curve(maps, masks)
    assert curve.fpr.numel() == LEGACY_PRO_STEPS and bool((curve.fpr.diff() >= 0).all())


def test_legacy_pro_of_a_perfect_binary_map_is_zero() -> None:
    # Every threshold flags exactly the defects: one point at FPR 0, no area. AUPRO says 1.
    masks = _hand_example()[1]
    assert legacy_pro(masks.float(), masks) == 0.0
    assert aupro(masks.float(), masks) == 1.0


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: auroc([0.1, 0.2], [1, 1]), "only one class"),
        (lambda: auroc([0.1, 0.2], [0, 0]), "only one class"),
        (lambda: auroc([0.1, 0.2, 0.3], [0, 1]), r"same shape, got \(3,\) and \(2,\)"),
        (lambda: auroc([0.1, math.nan], [0, 1]), "1 NaN"),
        (lambda: auroc([0.1, 0.2], [0, 2]), "binary"),
        (lambda: auroc([], []), "empty"),
        (lambda: image_auroc(torch.zeros(2, 2), torch.zeros(2, 2)), r"shape \[N\]"),
        (lambda: pixel_auroc(torch.zeros(4, 4), torch.zeros(4, 4)), r"\[N, H, W\]"),
        (lambda: aupro(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3)), "defect region"),
        (lambda: aupro(torch.zeros(1, 3, 3), torch.ones(1, 3, 3)), "normal pixel"),
        (lambda: aupro(torch.zeros(1, 3, 3), torch.zeros(1, 3, 4)), "same shape"),
        (lambda: aupro(*_hand_example(), fpr_limit=0.0), r"fpr_limit must lie in \(0, 1\]"),
        (lambda: aupro(*_hand_example(), fpr_limit=1.5), r"fpr_limit must lie in \(0, 1\]"),
        (lambda: legacy_pro(torch.ones(1, 2, 4), _hand_example()[1]), "constant maps"),
    ],
)
def test_errors_name_the_problem(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_complex_scores_are_refused() -> None:
    with pytest.raises(TypeError, match="real"):
        auroc(torch.tensor([1j, 2j]), [0, 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_metrics_on_cuda_equal_cpu() -> None:
    masks = torch.rand(4, 32, 32) > 0.9
    maps = torch.rand(4, 32, 32).round(decimals=2) + 0.3 * masks  # with ties
    for metric in (pixel_auroc, aupro, legacy_pro):
        assert metric(maps.cuda(), masks.cuda()) == pytest.approx(metric(maps, masks), abs=1e-9)
    scores, labels = maps.amax(dim=(1, 2)), torch.tensor([0, 1, 0, 1])
    assert image_auroc(scores.cuda(), labels.cuda()) == image_auroc(scores, labels)


# ---------------------------------------------------------------- speed

# The brief: 100 maps of 256 x 256 in under a second on two CPU cores. The bound here is
# generous so that a loaded CI machine does not fail; the measured median is in the report.
SPEED_BOUND_S = 3.0


@pytest.mark.parametrize("metric", [aupro, pixel_auroc, legacy_pro])
def test_metrics_on_100_maps_of_256_are_fast(metric) -> None:
    masks = torch.zeros(100, 256, 256, dtype=torch.bool)
    for i in range(0, 100, 2):
        masks[i, 30 + i : 60 + i, 40:90] = True
    maps = torch.rand(masks.shape) + 0.5 * masks
    metric(maps, masks)  # warm-up
    times = []
    for _ in range(3):
        start = time.perf_counter()
        metric(maps, masks)
        times.append(time.perf_counter() - start)
    assert sorted(times)[1] < SPEED_BOUND_S
