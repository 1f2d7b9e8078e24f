"""The full-range PRO that the PyramidFlow paper reports as "AUPRO", kept for comparison only."""

from __future__ import annotations

import torch

from ._checks import ArrayLike
from .aupro import ProCurve, _validate, region_weights

__all__ = ["LEGACY_PRO_STEPS", "legacy_pro", "legacy_pro_curve"]

LEGACY_PRO_STEPS = 200
"""Number of thresholds of the official PyramidFlow evaluation."""


def legacy_pro_curve(maps: ArrayLike, masks: ArrayLike, steps: int = LEGACY_PRO_STEPS) -> ProCurve:
    """The PRO curve as the official PyramidFlow code samples it, on a grid of thresholds.

    The maps are min-max normalized over the whole stack to [0, 1]; at each threshold
    ``t_k = k / steps``, ``k = 0 .. steps - 1``, the pixels with normalized score ``> t_k``
    (strictly) are flagged, and PRO and FPR are computed as in :func:`pro_curve` (8-connected
    regions, PRO averaged over all regions, FPR over all normal pixels). The curve has no
    ``(0, 0)`` or ``(1, 1)`` end point: it spans from the FPR at the top threshold (``t`` =
    0.995, usually near 0) to the FPR at ``t = 0`` (every pixel but the minimum, near 1).

    Each pixel is binned once with ``torch.bucketize``, so the grid costs no more than a sort.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps, not all equal; no NaN.
        masks: binary ground-truth masks of the same shape.
        steps: number of thresholds.

    Returns:
        The curve ordered by increasing FPR; its thresholds are on the normalized scale.

    Raises:
        ValueError: constant maps, ``steps < 2``, or any input error of :func:`pro_curve`.
    """
    if steps < 2:
        raise ValueError(f"steps must be at least 2, got {steps}")
    maps, masks = _validate(maps, masks)
    low, high = maps.min(), maps.max()
    if not bool(high > low):
        raise ValueError(f"all map values equal {float(low)}; the legacy PRO normalizes by "
                         "max - min and is undefined for constant maps")
    weights, num_regions = region_weights(masks)
    normal = ~masks
    num_normal = int(normal.sum())
    if num_regions == 0 or num_normal == 0:
        raise ValueError("the legacy PRO needs at least one defect region and one normal pixel")
    normalized = ((maps - low) / (high - low)).reshape(-1)
    thresholds = torch.arange(steps, device=maps.device).to(maps.dtype) * (1.0 / steps)
    # bins[i] = number of thresholds strictly below pixel i, so pixel i is flagged at k < bins[i].
    bins = torch.bucketize(normalized, thresholds)
    flagged_normal = torch.bincount(bins, weights=normal.reshape(-1).double(), minlength=steps + 1)
    flagged_overlap = torch.bincount(bins, weights=weights.reshape(-1), minlength=steps + 1)
    # Sum over bins j > k, for each threshold k; then reverse k so that the FPR increases.
    fpr = flagged_normal.flip(0).cumsum(0)[:steps] / num_normal
    pro = flagged_overlap.flip(0).cumsum(0)[:steps].clamp(0.0, 1.0)
    return ProCurve(fpr=fpr, pro=pro, thresholds=thresholds.flip(0))


def legacy_pro(maps: ArrayLike, masks: ArrayLike) -> float:
    """The PyramidFlow paper's "AUPRO": the unnormalized area under its sampled full PRO curve.

    This is **not** the MVTec-AD AUPRO (:func:`~flowkit.models.metrics.aupro`, integrated to
    FPR 0.3 and normalized). The official code integrates the 200-threshold curve of
    :func:`legacy_pro_curve` by trapezoids over whatever FPR range it spans (nearly [0, 1]),
    without normalizing and without the end points. Over the full range low-FPR mistakes
    weigh little, so it reads higher than AUPRO@0.3 (the paper: 94.0 full-range PRO for its
    encoder-free model). Report it labelled as "legacy full-range PRO", next to AUPRO@0.3.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps; no NaN, not constant.
        masks: binary ground-truth masks of the same shape.

    Returns:
        The legacy full-range PRO in [0, 1].

    Raises:
        ValueError: as :func:`legacy_pro_curve`.

    Its quirks, kept on purpose for comparability: the curve lacks the end points, so a
    perfect binary map, whose every threshold sits at FPR 0, scores 0; and the minimum pixel
    is never flagged, so the curve stops short of FPR 1.

    Example:
        >>> from flowkit.models.metrics import aupro
        >>> maps = torch.tensor([[[0.9, 0.4, 0.8, 0.4], [0.1, 0.2, 0.3, 0.6]]])
        >>> masks = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 1]]])
        >>> round(legacy_pro(maps, masks), 6), round(aupro(maps, masks, fpr_limit=1.0), 6)
        (0.625, 0.825)

    References:
        Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using
        Pyramid Normalizing Flow", CVPR 2023, arXiv:2303.02595.
    """
    curve = legacy_pro_curve(maps, masks)
    return float(torch.trapezoid(curve.pro, curve.fpr))
