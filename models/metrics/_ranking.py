"""Exact ranking curves: sort all scores once, accumulate weights, collapse tied scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["RankedSums", "ranked_sums", "trapezoid_area"]

# Flipping every bit but the sign bit maps IEEE floats to integers of the same order.
_MAGNITUDE_BITS = {torch.int32: 0x7FFFFFFF, torch.int64: 0x7FFFFFFFFFFFFFFF}
_SIGN_SHIFT = {torch.int32: 31, torch.int64: 63}


class RankedSums(NamedTuple):
    """Cumulative sums over the scores taken from the highest down, one entry per distinct score.

    Attributes:
        thresholds: ``[T]`` the distinct scores, decreasing.
        counts: ``[T]`` int64, how many scores are ``>= thresholds[t]``.
        sums: for each weight vector ``w``, ``[T]`` ``sum(w[scores >= thresholds[t]])``.
    """

    thresholds: Tensor
    counts: Tensor
    sums: tuple[Tensor, ...]


_KEY_DTYPES = {torch.float32: torch.int32, torch.float64: torch.int64}


def _flip_magnitude_of_negatives(bits: Tensor) -> Tensor:
    """Its own inverse: maps float bit patterns to order-preserving integers and back."""
    return bits ^ ((bits >> _SIGN_SHIFT[bits.dtype]) & _MAGNITUDE_BITS[bits.dtype])


def _descending_keys(scores: Tensor) -> Tensor:
    """Integer sort keys, equal for equal scores, increasing as the score decreases.

    Sorting integers is several times faster than sorting floats on CPU (radix sort), and the
    map is exact: float32 keys are int32, float64 keys are int64.
    """
    if scores.dtype != torch.float64:
        scores = scores.to(torch.float32)  # float16/bfloat16 convert exactly
    bits = (scores + 0.0).view(_KEY_DTYPES[scores.dtype])  # + 0.0: -0.0 and +0.0 tie
    return ~_flip_magnitude_of_negatives(bits)  # bitwise not reverses the order


def _scores_of(keys: Tensor) -> Tensor:
    """The scores (float32 or float64) that :func:`_descending_keys` mapped to ``keys``."""
    float_dtype = torch.float32 if keys.dtype == torch.int32 else torch.float64
    return _flip_magnitude_of_negatives(~keys).view(float_dtype)


def ranked_sums(scores: Tensor, weights: Sequence[Tensor]) -> RankedSums:
    """Accumulate per-sample weights over the samples sorted by decreasing score.

    Samples with equal scores enter together: only the last position of each run of ties is
    kept, so every threshold is one step of the curve, as in ``sklearn.metrics.roc_curve``.

    Args:
        scores: ``[n]`` real scores without NaN.
        weights: vectors of shape ``[n]`` (bool, integer or float) to accumulate.

    Returns:
        The distinct thresholds with the cumulative count and weight sums at each.
    """
    sorted_keys, order = torch.sort(_descending_keys(scores))
    is_last_tie = torch.ones_like(sorted_keys, dtype=torch.bool)
    torch.ne(sorted_keys[1:], sorted_keys[:-1], out=is_last_tie[:-1])
    ends = is_last_tie.nonzero().squeeze(1)
    sums = tuple(torch.cumsum(weight[order], dim=0)[ends] for weight in weights)
    thresholds = _scores_of(sorted_keys[ends]).to(scores.dtype)
    return RankedSums(thresholds=thresholds, counts=ends + 1, sums=sums)


def trapezoid_area(x: Tensor, y: Tensor, x_max: float) -> float:
    """Area under the piecewise-linear curve through ``(x, y)`` from ``x[0]`` to ``x_max``.

    Where ``x_max`` falls between two points, the curve is interpolated linearly there.

    Args:
        x: ``[T]`` non-decreasing abscissae.
        y: ``[T]`` ordinates.
        x_max: upper integration limit; points beyond it are dropped.

    Returns:
        The area as a Python float.
    """
    x, y = x.double(), y.double()
    inside = int(torch.searchsorted(x, torch.tensor([x_max], dtype=x.dtype, device=x.device),
                                    right=True))
    area = torch.trapezoid(y[:inside], x[:inside])
    if 0 < inside < x.numel() and float(x[inside - 1]) < x_max:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        y_at_max = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        area = area + 0.5 * (y0 + y_at_max) * (x_max - x0)
    return float(area)
