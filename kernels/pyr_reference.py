"""Plain-PyTorch references of the Laplacian-pyramid ops: the definition of their semantics.

Half-precision inputs are computed in float32 and rounded once at the end, like the kernels.
The ``*_backward_reference`` functions are the explicit adjoints the custom ops fall back to where
Triton cannot run; the tests check them against autograd of the forward references.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .pyr_common import (
    ARGMAX_DTYPE,
    BINOMIAL_NORM,
    BINOMIAL_TAPS,
    ZERO_INSERT_GAIN,
    PyramidMode,
    check_pyramid_input,
    check_up_size,
    pyr_down_size,
)

__all__ = [
    "maxpool_down_reference",
    "pyr_down_backward_reference",
    "pyr_down_reference",
    "pyr_level_backward_reference",
    "pyr_level_inverse_reference",
    "pyr_level_reference",
    "pyr_up_backward_reference",
    "pyr_up_reference",
    "reflect101_index",
]

_PAD = len(BINOMIAL_TAPS) // 2
_UP_GAIN = float(ZERO_INSERT_GAIN**2)


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for half-precision inputs (fp32 accumulation), else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def reflect101_index(index: torch.Tensor, n: int) -> torch.Tensor:
    """OpenCV's ``BORDER_REFLECT_101`` (``gfedcb|abcdefgh|gfedcba``) for any integer index.

    Args:
        index: integer tensor of positions, possibly outside ``[0, n)``.
        n: the length of the axis.

    Returns:
        The positions folded into ``[0, n)``: period ``2(n-1)``, mirrored about ``0`` and ``n-1``
        without repeating the edge pixel (``n == 1`` maps everything to 0).
    """
    if n == 1:
        return torch.zeros_like(index)
    period = 2 * (n - 1)
    folded = torch.remainder(index, period)
    return torch.where(folded > n - 1, period - folded, folded)


def _blur_weight(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """The depthwise ``[C, 1, 5, 5]`` binomial kernel ``gain * t t^T / 256`` for ``x``."""
    taps = torch.tensor(BINOMIAL_TAPS, dtype=x.dtype, device=x.device) / BINOMIAL_NORM
    kernel = torch.outer(taps, taps) * gain
    return kernel.expand(x.shape[1], 1, *kernel.shape).contiguous()


def _blur(x: torch.Tensor, padding: int = 0, stride: int = 1, gain: float = 1.0) -> torch.Tensor:
    """Depthwise binomial blur (cross-correlation; the kernel is symmetric) of ``[N, C, H, W]``."""
    return F.conv2d(x, _blur_weight(x, gain), stride=stride, padding=padding, groups=x.shape[1])


def _reflect_pad(x: torch.Tensor) -> torch.Tensor:
    """Pad the last two dims by ``_PAD`` with reflect-101 (valid for any size, even 1 or 2)."""
    for dim in (-2, -1):
        n = x.shape[dim]
        index = reflect101_index(torch.arange(-_PAD, n + _PAD, device=x.device), n)
        x = x.index_select(dim, index)
    return x


def _fold_reflect_pad(g: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Adjoint of :func:`_reflect_pad` onto a ``size`` map: add each pad pixel to its source."""
    for dim, n in zip((-2, -1), size, strict=True):
        index = reflect101_index(torch.arange(-_PAD, n + _PAD, device=g.device), n)
        shape = list(g.shape)
        shape[dim] = n
        g = g.new_zeros(shape).index_add_(dim, index, g)
    return g


def _windows(t: torch.Tensor) -> torch.Tensor:
    """``[N, C, 2h, 2w]`` -> ``[N, C, h, w, 4]``: each 2x2 window, row-major."""
    n, c, hh, ww = t.shape
    return t.reshape(n, c, hh // 2, 2, ww // 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(
        n, c, hh // 2, ww // 2, 4)


def _unwindows(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_windows`."""
    n, c, h, w, _ = t.shape
    return t.reshape(n, c, h, w, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(n, c, 2 * h, 2 * w)


def maxpool_down_reference(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PyramidFlow's ``down`` with its argmax: blur (zero padding), then 2x2 max-pool.

    Ties pick the first maximum of the window in row-major order (``torch.max`` returns the first
    maximal index), and autograd routes the gradient to that pixel only.

    Args:
        x: ``[N, C, H, W]`` with even ``H``, ``W``.

    Returns:
        ``(down [N, C, H/2, W/2]`` in ``x.dtype``, ``argmax`` uint8 in ``0..3`` = ``2*dy + dx)``.
    """
    blurred = _blur(x.to(_work_dtype(x.dtype)), padding=_PAD)
    values, argmax = _windows(blurred).max(dim=-1)
    return values.to(x.dtype), argmax.to(ARGMAX_DTYPE)


def pyr_down_reference(x: torch.Tensor, mode: PyramidMode | str) -> torch.Tensor:
    """Reference of :func:`flowkit.kernels.pyramid.pyr_down` (same signature and semantics)."""
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    pyr_down_size(x.shape[-2], x.shape[-1], mode)
    if mode is PyramidMode.PYRAMIDFLOW:
        return maxpool_down_reference(x)[0]
    return _blur(_reflect_pad(x.to(_work_dtype(x.dtype))), stride=2).to(x.dtype)


def _up_work(x: torch.Tensor, size: tuple[int, int], mode: PyramidMode) -> torch.Tensor:
    """``pyr_up`` in the working precision (no final rounding), sizes already checked."""
    x = x.to(_work_dtype(x.dtype))
    n, c, h, w = x.shape
    if mode is PyramidMode.PYRAMIDFLOW:
        nearest = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        return _blur(nearest, padding=_PAD)
    zero_inserted = x.new_zeros(n, c, 2 * h, 2 * w)
    zero_inserted[..., ::2, ::2] = x
    return _blur(_reflect_pad(zero_inserted), gain=_UP_GAIN)[..., : size[0], : size[1]]


def pyr_up_reference(
    x: torch.Tensor, size: tuple[int, int] | torch.Size, mode: PyramidMode | str
) -> torch.Tensor:
    """Reference of :func:`flowkit.kernels.pyramid.pyr_up` (same signature and semantics)."""
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    size = (size[0], size[1])
    check_up_size(tuple(x.shape[-2:]), size, mode)
    return _up_work(x, size, mode).to(x.dtype)


def pyr_level_reference(
    x: torch.Tensor, mode: PyramidMode | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of :func:`flowkit.kernels.pyramid.pyr_level`: ``(x - up(down(x)), down(x))``."""
    mode = PyramidMode(mode)
    down = pyr_down_reference(x, mode)
    size = (x.shape[-2], x.shape[-1])
    residual = x.to(_work_dtype(x.dtype)) - _up_work(down, size, mode)
    return residual.to(x.dtype), down


def pyr_level_inverse_reference(
    residual: torch.Tensor, down: torch.Tensor, mode: PyramidMode | str
) -> torch.Tensor:
    """Reference of :func:`flowkit.kernels.pyramid.pyr_level_inverse`: ``residual + up(down)``."""
    mode = PyramidMode(mode)
    check_pyramid_input(residual, "residual")
    check_pyramid_input(down, "down")
    size = (residual.shape[-2], residual.shape[-1])
    check_up_size(tuple(down.shape[-2:]), size, mode)
    x = residual.to(_work_dtype(residual.dtype)) + _up_work(down, size, mode)
    return x.to(residual.dtype)


def pyr_down_backward_reference(
    grad: torch.Tensor, argmax: torch.Tensor, size: tuple[int, int], mode: PyramidMode | str
) -> torch.Tensor:
    """Gradient of ``pyr_down`` w.r.t. its ``size = (H, W)`` input, given ``grad`` of its output.

    Args:
        grad: ``[N, C, h, w]`` gradient of the output.
        argmax: the forward's 2x2 argmax (pyramidflow; ignored by gaussian).
        size: ``(H, W)`` of the forward's input.
        mode: the pyramid mode.

    Returns:
        ``[N, C, H, W]`` in ``grad.dtype``.
    """
    mode = PyramidMode(mode)
    g = grad.to(_work_dtype(grad.dtype))
    if mode is PyramidMode.PYRAMIDFLOW:
        unpooled = g.new_zeros(*g.shape, 4).scatter_(-1, argmax.long().unsqueeze(-1),
                                                      g.unsqueeze(-1))
        return _blur(_unwindows(unpooled), padding=_PAD).to(grad.dtype)
    height, width = size
    out_pad = (height + 1 - 2 * g.shape[-2], width + 1 - 2 * g.shape[-1])
    padded = F.conv_transpose2d(g, _blur_weight(g), stride=2, output_padding=out_pad,
                                groups=g.shape[1])
    return _fold_reflect_pad(padded, size).to(grad.dtype)


def pyr_up_backward_reference(
    grad: torch.Tensor, coarse: tuple[int, int], mode: PyramidMode | str
) -> torch.Tensor:
    """Gradient of ``pyr_up`` w.r.t. its ``coarse = (h, w)`` input, given ``grad`` of its output.

    Args:
        grad: ``[N, C, H, W]`` gradient of the output.
        coarse: ``(h, w)`` of the forward's input.
        mode: the pyramid mode.

    Returns:
        ``[N, C, h, w]`` in ``grad.dtype``.
    """
    mode = PyramidMode(mode)
    g = grad.to(_work_dtype(grad.dtype))
    h, w = coarse
    if mode is PyramidMode.PYRAMIDFLOW:
        return _windows(_blur(g, padding=_PAD)).sum(dim=-1).to(grad.dtype)
    uncropped = F.pad(g, (0, 2 * w - g.shape[-1], 0, 2 * h - g.shape[-2]))
    padded = F.conv_transpose2d(uncropped, _blur_weight(g, _UP_GAIN), groups=g.shape[1])
    return _fold_reflect_pad(padded, (2 * h, 2 * w))[..., ::2, ::2].to(grad.dtype)


def pyr_level_backward_reference(
    grad_residual: torch.Tensor,
    grad_down: torch.Tensor,
    argmax: torch.Tensor,
    mode: PyramidMode | str,
) -> torch.Tensor:
    """Gradient of ``pyr_level`` w.r.t. ``x``: ``g_r + down^T(g_d - up^T(g_r))``.

    Args:
        grad_residual: ``[N, C, H, W]``.
        grad_down: ``[N, C, h, w]``.
        argmax: the forward's 2x2 argmax (pyramidflow; ignored by gaussian).
        mode: the pyramid mode.

    Returns:
        ``[N, C, H, W]`` in ``grad_residual.dtype``.
    """
    size = (grad_residual.shape[-2], grad_residual.shape[-1])
    coarse = (grad_down.shape[-2], grad_down.shape[-1])
    g_res = grad_residual.to(_work_dtype(grad_residual.dtype))
    through_down = grad_down.to(g_res.dtype) - pyr_up_backward_reference(g_res, coarse, mode)
    grad_x = g_res + pyr_down_backward_reference(through_down, argmax, size, mode)
    return grad_x.to(grad_residual.dtype)
