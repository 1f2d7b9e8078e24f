"""AUPRO, the MVTec-AD per-region-overlap metric, computed exactly by sort and cumulative sum."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from skimage.measure import label
from torch import Tensor

from ._checks import ArrayLike, as_binary, as_map_stack, as_scores, check_same_shape
from ._ranking import ranked_sums, trapezoid_area

__all__ = ["DEFAULT_FPR_LIMIT", "ProCurve", "aupro", "pro_curve", "region_weights"]

DEFAULT_FPR_LIMIT = 0.3
"""The MVTec-AD protocol integrates the PRO curve up to a false-positive rate of 30 %."""

# Connectivity 2 in 2-D: the 8 neighbours, as scipy's 3x3 structure of ones in MVTec's code.
_EIGHT_CONNECTED = 2


class ProCurve(NamedTuple):
    """A per-region-overlap curve against the global false-positive rate.

    Attributes:
        fpr: ``[T + 1]`` float64 false-positive rates over all normal pixels, non-decreasing.
        pro: ``[T + 1]`` float64 mean overlap over all ground-truth regions, non-decreasing.
        thresholds: ``[T + 1]`` the score at each point (a pixel is flagged when its score is
            ``>=`` the threshold; the first is ``+inf``).
    """

    fpr: Tensor
    pro: Tensor
    thresholds: Tensor


def region_weights(masks: Tensor) -> tuple[Tensor, int]:
    """Per-pixel weights whose sum over the flagged pixels is the per-region overlap (PRO).

    The regions are the 8-connected components of each mask. A pixel of region ``r`` weighs
    ``1 / (R |r|)`` with ``R`` the number of regions in all masks, so that for a binary
    prediction ``b``, ``sum(w * b) = (1/R) sum_r |b ∩ r| / |r|``.

    Args:
        masks: ``[N, H, W]`` bool masks (any device; labelled on the CPU with scikit-image).

    Returns:
        ``[N, H, W]`` float64 weights on the device of ``masks`` and the number of regions ``R``.
    """
    num, height, width = masks.shape
    # One tall image with an empty row under each mask: components cannot cross it, so one
    # label() call serves the whole stack.
    stacked = np.zeros((num, height + 1, width), dtype=bool)
    stacked[:, :height] = masks.cpu().numpy()
    regions, num_regions = label(stacked.reshape(-1, width), connectivity=_EIGHT_CONNECTED,
                                 return_num=True)
    sizes = np.bincount(regions.ravel()).astype(np.float64)
    per_label = np.zeros_like(sizes)
    per_label[1:] = 1.0 / (sizes[1:] * max(num_regions, 1))
    weights = per_label[regions].reshape(num, height + 1, width)[:, :height]
    return torch.from_numpy(np.ascontiguousarray(weights)).to(masks.device), num_regions


def _validate(maps: ArrayLike, masks: ArrayLike) -> tuple[Tensor, Tensor]:
    """Maps and masks as ``[N, H, W]`` tensors on the maps' device, checked."""
    maps = as_map_stack(as_scores(maps, "maps"), "maps")
    masks = as_map_stack(as_binary(masks, "masks"), "masks")
    check_same_shape(maps, masks, "maps", "masks")
    return maps, masks.to(maps.device)


def _flagged_before_limit(
    scores: Tensor, normal: Tensor, num_normal: int, fpr_limit: float
) -> Tensor | None:
    """Which pixels can enter the curve up to the first point with FPR >= ``fpr_limit``.

    With ``tau`` the ``k``-th highest normal score, ``k >= fpr_limit * num_normal``, every
    threshold above ``tau`` has FPR below the limit and ``tau`` itself reaches it, so only pixels
    scoring ``>= tau`` matter. Selecting them is linear; sorting fewer pixels pays for it.
    Returns ``None`` when every pixel is needed.
    """
    # + 1 guards against ceil() of a product rounded up past an integer: a larger k is harmless.
    k = min(num_normal, math.ceil(fpr_limit * num_normal) + 1)
    if k == num_normal:
        return None
    tau = torch.kthvalue(scores[normal], num_normal - k + 1).values
    return scores >= tau


def pro_curve(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = 1.0) -> ProCurve:
    """The exact PRO curve of the MVTec-AD protocol, one point per distinct score.

    At a threshold ``t`` the pixels with score ``>= t`` are flagged; the PRO is the mean over
    all ground-truth regions (8-connected components of every mask) of the flagged fraction of
    the region, and the FPR the flagged fraction of all normal pixels of all images.
    Pixels with equal scores enter the curve together.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps; no NaN.
        masks: binary ground-truth masks of the same shape.
        fpr_limit: the curve may stop at the first point (or the one after) whose FPR reaches
            this value, in (0, 1]; 1 gives the whole curve.

    Returns:
        The curve from ``(0, 0)`` (to ``(1, 1)`` when whole), on the device of ``maps``.

    Raises:
        ValueError: a wrong or mismatched shape, NaN, non-binary masks, no normal pixel, no
            defect region, or ``fpr_limit`` outside (0, 1].

    Example:
        >>> masks = torch.tensor([[[0, 1], [0, 0]]])
        >>> curve = pro_curve(torch.tensor([[[0.1, 0.5], [0.5, 0.2]]]), masks)
        >>> curve.fpr.tolist(), curve.pro.tolist()
        ([0.0, 0.3333333333333333, 0.6666666666666666, 1.0], [0.0, 1.0, 1.0, 1.0])
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}; the MVTec value is 0.3")
    maps, masks = _validate(maps, masks)
    weights, num_regions = region_weights(masks)
    scores, normal, weights = maps.reshape(-1), ~masks.reshape(-1), weights.reshape(-1)
    num_normal = int(normal.sum())
    if num_regions == 0 or num_normal == 0:
        missing = "defect region" if num_regions == 0 else "normal pixel"
        raise ValueError(
            f"the PRO curve needs at least one {missing} in the masks of shape "
            f"{tuple(masks.shape)}; include both defective and normal pixels"
        )
    needed = _flagged_before_limit(scores, normal, num_normal, fpr_limit)
    if needed is not None:
        scores, normal, weights = scores[needed], normal[needed], weights[needed]
    ranked = ranked_sums(scores, [normal, weights])
    false_positives, overlap = ranked.sums
    curve = ProCurve(
        fpr=false_positives.new_zeros(ranked.counts.numel() + 1, dtype=torch.float64),
        pro=overlap.new_zeros(ranked.counts.numel() + 1),
        thresholds=ranked.thresholds.new_full((ranked.counts.numel() + 1,), float("inf")),
    )
    curve.fpr[1:] = false_positives  # integer counts, divided in float64
    curve.fpr[1:] /= num_normal
    torch.clamp(overlap, 0.0, 1.0, out=curve.pro[1:])  # clamp: float64 summation error
    curve.thresholds[1:] = ranked.thresholds
    return curve


def aupro(maps: ArrayLike, masks: ArrayLike, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
    """Normalized area under the PRO curve up to ``fpr_limit`` (the MVTec-AD protocol).

    .. math:: \\mathrm{AUPRO} = \\frac{1}{a} \\int_0^{a} \\mathrm{PRO}(\\mathrm{FPR})\\,
        d\\mathrm{FPR}

    with ``a = fpr_limit``, the exact curve of :func:`pro_curve` integrated by trapezoids and
    interpolated linearly at ``a``. The result lies in [0, 1]: a perfect map scores 1.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]`` anomaly maps, higher meaning more anomalous.
        masks: binary ground-truth masks of the same shape.
        fpr_limit: the upper integration limit ``a``, in (0, 1].

    Returns:
        The normalized AUPRO.

    Raises:
        ValueError: as :func:`pro_curve`.

    Example:
        >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool)
        >>> masks[0, 2:4, 2:4] = True
        >>> aupro(masks.float(), masks)
        1.0

    References:
        Bergmann et al., "The MVTec Anomaly Detection Dataset: A Comprehensive Real-World
        Dataset for Unsupervised Anomaly Detection", IJCV 2021.
    """
    curve = pro_curve(maps, masks, fpr_limit)
    return min(trapezoid_area(curve.fpr, curve.pro, fpr_limit) / fpr_limit, 1.0)
