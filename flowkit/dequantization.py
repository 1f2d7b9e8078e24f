"""Uniform dequantization of discrete images and the bits-per-dimension of a density on them.

Convention (Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
arXiv:1511.01844; used by RealNVP and Glow): integer pixels ``k in {0, ..., levels-1}`` become
``x = (k + u) / levels`` with ``u ~ U[0, 1)``, so ``x in [0, 1)^D``. A continuous density
``p`` on ``[0, 1)^D`` then bounds the discrete model's likelihood,
``-log P(k) <= E_u[-log p((k + u) / levels)] + D log(levels)``, and

    bits/dim = (nll + D * log(levels)) / (D * log 2),

with ``nll`` the negative log-density in nats of the *scaled* data in ``[0, 1)^D``. For 8-bit
images ``levels = 256``. A flow that first maps ``[0, 1)`` elsewhere (a shift, a logit) must
include that map's log-determinant in ``nll``, as a flowkit layer in the flow does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["bits_per_dim", "uniform_dequantize"]


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2 (256 for 8-bit images), got {levels!r}")
    return int(levels)


def uniform_dequantize(
    k: Tensor, levels: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """``(k + u) / levels`` with ``u ~ U[0, 1)``, for integer-valued ``k`` in ``[0, levels)``.

    Args:
        k: pixel values ``0 .. levels-1`` (an integer tensor, or a float tensor holding
            integers), any shape.
        levels: the number of discrete values per pixel (256 for 8-bit images).
        generator: the random generator for ``u``.

    Returns:
        A float32 (float64 for float64 input) tensor of ``k``'s shape in ``[0, 1)``.

    Raises:
        ValueError: if ``k`` holds non-integers or values outside ``[0, levels)`` (a host
            check of the data, not of a layer's hot path).

    Example:
        >>> x = uniform_dequantize(torch.tensor([0, 255]), 256)
        >>> bool((x >= 0).all() and (x < 1).all())
        True
    """
    levels = _check_levels(levels)
    dtype = k.dtype if k.dtype == torch.float64 else torch.float32
    values = k.to(dtype)
    if bool((values != values.round()).any()) or bool(((values < 0) | (values >= levels)).any()):
        raise ValueError(
            f"uniform_dequantize takes integer pixel values in [0, {levels}), got values in "
            f"[{float(values.min())}, {float(values.max())}]; pass the raw integer image, not "
            "one already scaled to [0, 1]"
        )
    noise = torch.rand(k.shape, generator=generator, dtype=dtype, device=k.device)
    return (values + noise) / levels


def bits_per_dim(nll: Tensor | float, dims: int, levels: int = 256) -> Tensor:
    """``(nll + D log(levels)) / (D log 2)``: nats of data in ``[0, 1)^D`` to bits per dim.

    Args:
        nll: negative log-density in nats per sample of the dequantized data scaled to
            ``[0, 1)^D`` (see the module doc); a tensor of any shape or a float.
        dims: ``D``, the number of dimensions per sample (e.g. ``C * H * W``).
        levels: the discrete values per dimension (256 for 8-bit images).

    Returns:
        Bits per dimension, shaped like ``nll``.

    Example:
        >>> float(bits_per_dim(0.0, dims=64, levels=256))  # uniform density on [0, 1)^64
        8.0
    """
    levels = _check_levels(levels)
    if dims < 1:
        raise ValueError(f"dims must be the positive number of dimensions per sample, got {dims}")
    nll = torch.as_tensor(nll)
    return (nll + dims * math.log(levels)) / (dims * math.log(2))
