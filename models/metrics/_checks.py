"""Input validation shared by the metrics: tensors, shapes, binary labels, finite scores."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["ArrayLike", "as_binary", "as_map_stack", "as_scores", "check_same_shape"]

ArrayLike = Tensor | np.ndarray

# A map stack is [N, H, W]; [N, 1, H, W] (a channel axis of size one) is accepted too.
_MAP_NDIM = 3
_MAP_WITH_CHANNEL_NDIM = 4


def as_scores(scores: ArrayLike, name: str) -> Tensor:
    """Scores as a real tensor without NaN.

    Args:
        scores: any real array or tensor.
        name: the argument's name, for error messages.

    Returns:
        The scores as a tensor (same device; bool/int promoted to float64).

    Raises:
        TypeError: complex scores.
        ValueError: empty scores or NaN among them.
    """
    scores = torch.as_tensor(scores)
    if scores.is_complex():
        raise TypeError(f"{name} must be real, got dtype {scores.dtype}")
    if not scores.is_floating_point():
        scores = scores.to(torch.float64)
    if scores.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(scores.shape)}); pass at least one score")
    nan_count = int(torch.isnan(scores).sum())
    if nan_count:
        raise ValueError(
            f"{name} contains {nan_count} NaN value(s) of {scores.numel()}; "
            "replace them (e.g. torch.nan_to_num) before computing the metric"
        )
    return scores


def as_binary(labels: ArrayLike, name: str) -> Tensor:
    """Labels or masks as a bool tensor, refusing values other than 0 and 1.

    Args:
        labels: bool, integer or float array with values in {0, 1}.
        name: the argument's name, for error messages.

    Returns:
        A bool tensor of the same shape and device.

    Raises:
        ValueError: a value other than 0 or 1.
    """
    labels = torch.as_tensor(labels)
    if labels.dtype == torch.bool:
        return labels
    is_binary = (labels == 0) | (labels == 1)
    if not bool(is_binary.all()):
        bad = labels[~is_binary].unique()[:5].tolist()
        raise ValueError(
            f"{name} must be binary (0/1 or bool), found other values such as {bad}; "
            "threshold the mask first (e.g. mask > 0)"
        )
    return labels != 0


def check_same_shape(a: Tensor, b: Tensor, a_name: str, b_name: str) -> None:
    """Raise a ValueError naming both shapes unless ``a`` and ``b`` have the same shape."""
    if a.shape != b.shape:
        raise ValueError(
            f"{a_name} and {b_name} must have the same shape, "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def as_map_stack(maps: Tensor, name: str) -> Tensor:
    """A stack of 2-D maps as ``[N, H, W]``, dropping a channel axis of size one.

    Args:
        maps: ``[N, H, W]`` or ``[N, 1, H, W]``.
        name: the argument's name, for error messages.

    Returns:
        A view of shape ``[N, H, W]``.

    Raises:
        ValueError: any other shape.
    """
    if maps.ndim == _MAP_WITH_CHANNEL_NDIM and maps.shape[1] == 1:
        return maps[:, 0]
    if maps.ndim != _MAP_NDIM:
        raise ValueError(
            f"{name} must have shape [N, H, W] or [N, 1, H, W], got {tuple(maps.shape)}; "
            "for a single map add a batch axis (x[None])"
        )
    return maps
