"""``pyr_down``: one down-sampling step of a Laplacian pyramid, as a custom op with autograd."""

from __future__ import annotations

import torch

from .pyr_common import (
    ARGMAX_DTYPE,
    PyramidMode,
    check_pyramid_input,
    empty_argmax,
    empty_map,
    like_map,
    pyr_down_size,
    runs_triton,
    use_pyramid_kernel,
)
from .pyr_reference import (
    maxpool_down_reference,
    pyr_down_backward_reference,
    pyr_down_reference,
)

__all__ = ["pyr_down"]


@torch.library.custom_op("flowkit::pyr_down", mutates_args=())
def _pyr_down_op(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(down, argmax)``; ``argmax`` (uint8, the 2x2 max-pool's choice) is empty for gaussian."""
    if runs_triton(x):
        from .pyr_kernels import pyr_down_triton

        return pyr_down_triton(x, mode)
    if PyramidMode(mode) is PyramidMode.PYRAMIDFLOW:
        down, argmax = maxpool_down_reference(x)
        return like_map(down, x), like_map(argmax, x)
    return like_map(pyr_down_reference(x, mode), x), empty_argmax(x)


@_pyr_down_op.register_fake
def _pyr_down_fake(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
    if PyramidMode(mode) is PyramidMode.PYRAMIDFLOW:
        return empty_map(x, h, w), empty_map(x, h, w, dtype=ARGMAX_DTYPE)
    return empty_map(x, h, w), empty_argmax(x)


@torch.library.custom_op("flowkit::pyr_down_backward", mutates_args=())
def _pyr_down_backward_op(
    grad: torch.Tensor, argmax: torch.Tensor, height: int, width: int, mode: str
) -> torch.Tensor:
    """``down^T(grad)`` onto a ``height x width`` map (``argmax`` from the forward)."""
    if runs_triton(grad):
        from .pyr_kernels import pyr_down_backward_triton

        return pyr_down_backward_triton(grad, argmax, (height, width), mode)
    return like_map(pyr_down_backward_reference(grad, argmax, (height, width), mode), grad)


@_pyr_down_backward_op.register_fake
def _pyr_down_backward_fake(
    grad: torch.Tensor, argmax: torch.Tensor, height: int, width: int, mode: str
) -> torch.Tensor:
    return empty_map(grad, height, width)


def _setup_context(ctx, inputs, output) -> None:
    x, mode = inputs
    ctx.save_for_backward(output[1])
    ctx.size = (x.shape[-2], x.shape[-1])
    ctx.mode = mode


def _backward(ctx, grad_down: torch.Tensor, _grad_argmax: torch.Tensor):
    (argmax,) = ctx.saved_tensors
    grad_x = _pyr_down_backward_op(grad_down, argmax, *ctx.size, ctx.mode)
    return grad_x, None


_pyr_down_op.register_autograd(_backward, setup_context=_setup_context)


def pyr_down(x: torch.Tensor, mode: PyramidMode | str) -> torch.Tensor:
    """One down-sampling step of a Laplacian pyramid (blur and decimate, in one pass).

    * ``gaussian`` (OpenCV ``pyrDown``): ``y[i, j] = sum_{a,b} k[a] k[b] x[R(2i+a-2), R(2j+b-2)]``
      with ``k = [1, 4, 6, 4, 1] / 16`` and ``R`` the reflect-101 border; output
      ``((H+1)//2, (W+1)//2)``; needs ``H, W >= 2``.
    * ``pyramidflow`` (PyramidFlow's official code): ``b = blur(x)`` with zero padding, then
      ``y[i, j] = max(b[2i, 2j], b[2i, 2j+1], b[2i+1, 2j], b[2i+1, 2j+1])``; output
      ``(H/2, W/2)``; needs even ``H, W``. The gradient goes to the first maximum of each window
      in that (row-major) order.

    Triton (``flowkit::pyr_down``, fp32 accumulation) for CUDA tensors where the ``pyramid``
    dispatch table validated it or ``FLOWKIT_KERNELS=1`` forces it (see
    :func:`~flowkit.kernels.pyr_common.use_pyramid_kernel`), :func:`pyr_down_reference` elsewhere.

    Args:
        x: ``[N, C, H, W]`` float16/bfloat16/float32/float64, NCHW or channels-last.
        mode: :class:`PyramidMode` or its value.

    Returns:
        ``[N, C, h, w]`` in ``x.dtype``.

    Raises:
        ValueError: for a size the mode cannot split (the message names the nearest valid ones).

    Example:
        >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
        >>> pyr_down(x, "gaussian").shape
        torch.Size([1, 1, 2, 2])
    """
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    pyr_down_size(x.shape[-2], x.shape[-1], mode)
    if use_pyramid_kernel("pyr_down", mode, x.numel(), x):
        return _pyr_down_op(x, mode.value)[0]
    return pyr_down_reference(x, mode)
