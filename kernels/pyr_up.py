"""``pyr_up``: one up-sampling step of a Laplacian pyramid, as a custom op with autograd."""

from __future__ import annotations

import torch

from .pyr_common import (
    PyramidMode,
    check_pyramid_input,
    check_up_size,
    empty_map,
    like_map,
    runs_triton,
    use_pyramid_kernel,
)
from .pyr_reference import pyr_up_backward_reference, pyr_up_reference

__all__ = ["pyr_up"]


@torch.library.custom_op("flowkit::pyr_up", mutates_args=())
def _pyr_up_op(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """``up(x)`` at ``height x width``."""
    if runs_triton(x):
        from .pyr_kernels import pyr_up_triton

        return pyr_up_triton(x, (height, width), mode)
    return like_map(pyr_up_reference(x, (height, width), mode), x)


@_pyr_up_op.register_fake
def _pyr_up_fake(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    return empty_map(x, height, width)


@torch.library.custom_op("flowkit::pyr_up_backward", mutates_args=())
def pyr_up_backward_op(grad: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """``up^T(grad)`` onto the ``height x width`` coarse map."""
    if runs_triton(grad):
        from .pyr_kernels import pyr_up_backward_triton

        return pyr_up_backward_triton(grad, (height, width), mode)
    return like_map(pyr_up_backward_reference(grad, (height, width), mode), grad)


@pyr_up_backward_op.register_fake
def _pyr_up_backward_fake(grad: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    return empty_map(grad, height, width)


def _setup_context(ctx, inputs, output) -> None:
    x, _, _, mode = inputs
    ctx.coarse = (x.shape[-2], x.shape[-1])
    ctx.mode = mode


def _backward(ctx, grad: torch.Tensor):
    return pyr_up_backward_op(grad, *ctx.coarse, ctx.mode), None, None, None


_pyr_up_op.register_autograd(_backward, setup_context=_setup_context)


def pyr_up(
    x: torch.Tensor, size: tuple[int, int] | torch.Size, mode: PyramidMode | str
) -> torch.Tensor:
    """One up-sampling step of a Laplacian pyramid (polyphase: no up-sampled temporary).

    * ``gaussian`` (OpenCV ``pyrUp``): insert zeros to ``(2h, 2w)`` (``u[2i, 2j] = x[i, j]``),
      blur with ``4 k k^T`` under reflect-101 borders *of that 2h x 2w grid*, crop to ``size``.
      Each of ``H, W`` may be ``2h`` or ``2h - 1`` (so odd sizes recompose).
    * ``pyramidflow`` (PyramidFlow's official code): nearest x2, then the blur ``k k^T`` with
      zero padding (nearest up-sampling keeps the mean, so no gain); ``size`` must be
      ``(2h, 2w)``.

    Triton (``flowkit::pyr_up``) where dispatched as in :func:`pyr_down`, else
    :func:`pyr_up_reference`.

    Args:
        x: ``[N, C, h, w]`` float16/bfloat16/float32/float64, NCHW or channels-last.
        size: ``(H, W)`` of the output.
        mode: :class:`PyramidMode` or its value.

    Returns:
        ``[N, C, H, W]`` in ``x.dtype``.

    Raises:
        ValueError: for a ``size`` the mode cannot reach from ``x`` (naming the valid ones).

    Example:
        >>> pyr_up(torch.ones(1, 1, 2, 3), (3, 6), "gaussian")
        tensor([[[[1., 1., 1., 1., 1., 1.],
                  [1., 1., 1., 1., 1., 1.],
                  [1., 1., 1., 1., 1., 1.]]]])
    """
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    size = (size[0], size[1])
    check_up_size((x.shape[-2], x.shape[-1]), size, mode)
    if use_pyramid_kernel("pyr_up", mode, x.shape[0] * x.shape[1] * size[0] * size[1], x):
        return _pyr_up_op(x, *size, mode.value)
    return pyr_up_reference(x, size, mode)
