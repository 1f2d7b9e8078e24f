"""Laplacian pyramids as functions: an image to band-pass levels and back, exactly.

``decompose`` splits ``x`` into ``levels`` tensors, finest first: ``levels - 1`` band-pass
residuals ``g_k - up(down(g_k))`` and the low-pass ``g_{L-1}`` last. ``compose`` inverts it
with ``g_k = residual_k + up(g_{k+1})``, which is exact (to float rounding) whatever ``down``
does, since it uses the same ``up``. Modes (see :class:`flowkit.kernels.pyramid.PyramidMode`):

- ``"pyramidflow"``: PyramidFlow's pyramid — 5x5 binomial blur with zero padding, then 2x2
  max-pooling down; nearest x2 then the same blur up. Even sizes at every level.
- ``"gaussian"``: OpenCV's ``pyrDown``/``pyrUp`` — reflect-101 borders, even-pixel subsampling,
  ``pyrUp`` as zero insertion then 4x the blur; odd sizes as OpenCV handles them.

The steps run as fused Triton kernels on CUDA and as plain PyTorch elsewhere.

Example:
    >>> import torch
    >>> from flowkit.pyramid import compose, decompose
    >>> x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    >>> levels = decompose(x, 4, "pyramidflow")
    >>> [t.shape[-1] for t in levels]
    [32, 16, 8, 4]
    >>> torch.allclose(compose(levels, "pyramidflow"), x)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from .kernels.pyramid import (
    PyramidMode,
    check_pyramid_size,
    pyr_level,
    pyr_level_inverse,
    valid_sizes_near,
)

__all__ = ["PyramidMode", "check_pyramid_size", "compose", "decompose", "valid_sizes_near"]


def decompose(x: Tensor, levels: int, mode: PyramidMode | str) -> tuple[Tensor, ...]:
    """Split ``x [B, C, H, W]`` into ``levels`` maps, band-pass residuals first, low-pass last.

    Raises:
        ValueError: if ``levels < 1`` or the mode cannot split ``H x W`` that often (the message
            names the nearest sizes that work).
    """
    if levels < 1:
        raise ValueError(f"a pyramid needs at least 1 level, got levels={levels}")
    check_pyramid_size(x.shape[-2], x.shape[-1], levels, mode)
    out = []
    for _ in range(levels - 1):
        residual, x = pyr_level(x, mode)
        out.append(residual)
    out.append(x)
    return tuple(out)


def compose(levels: Sequence[Tensor], mode: PyramidMode | str) -> Tensor:
    """Rebuild the image from its pyramid: ``g = residual + up(g_coarser)``, coarsest first."""
    image = levels[-1]
    for residual in reversed(levels[:-1]):
        image = pyr_level_inverse(residual, image, mode)
    return image
