"""``pyr_level`` and ``pyr_level_inverse``: one Laplacian-pyramid level and its exact inverse."""

from __future__ import annotations

import torch

from .pyr_common import (
    ARGMAX_DTYPE,
    PyramidMode,
    check_pyramid_input,
    check_up_size,
    empty_argmax,
    empty_map,
    like_map,
    pyr_down_size,
    runs_triton,
    use_pyramid_kernel,
)
from .pyr_reference import (
    maxpool_down_reference,
    pyr_level_backward_reference,
    pyr_level_inverse_reference,
    pyr_level_reference,
)
from .pyr_up import pyr_up_backward_op

__all__ = ["pyr_level", "pyr_level_inverse"]


@torch.library.custom_op("flowkit::pyr_level", mutates_args=())
def _pyr_level_op(x: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x - up(down(x)), down(x), argmax)``; ``argmax`` is empty for gaussian."""
    if runs_triton(x):
        from .pyr_kernels import pyr_level_triton

        return pyr_level_triton(x, mode)
    residual, down = pyr_level_reference(x, mode)
    if PyramidMode(mode) is PyramidMode.PYRAMIDFLOW:
        argmax = like_map(maxpool_down_reference(x)[1], x)
    else:
        argmax = empty_argmax(x)
    return like_map(residual, x), like_map(down, x), argmax


@_pyr_level_op.register_fake
def _pyr_level_fake(x: torch.Tensor, mode: str):
    h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
    if PyramidMode(mode) is PyramidMode.PYRAMIDFLOW:
        argmax = empty_map(x, h, w, dtype=ARGMAX_DTYPE)
    else:
        argmax = empty_argmax(x)
    return empty_map(x, x.shape[-2], x.shape[-1]), empty_map(x, h, w), argmax


@torch.library.custom_op("flowkit::pyr_level_backward", mutates_args=())
def _pyr_level_backward_op(
    grad_residual: torch.Tensor, grad_down: torch.Tensor, argmax: torch.Tensor, mode: str
) -> torch.Tensor:
    """``g_r + down^T(g_d - up^T(g_r))``."""
    if runs_triton(grad_residual):
        from .pyr_kernels import pyr_level_backward_triton

        return pyr_level_backward_triton(grad_residual, grad_down, argmax, mode)
    grad_x = pyr_level_backward_reference(grad_residual, grad_down, argmax, mode)
    return like_map(grad_x, grad_residual)


@_pyr_level_backward_op.register_fake
def _pyr_level_backward_fake(grad_residual, grad_down, argmax, mode):
    return empty_map(grad_residual, grad_residual.shape[-2], grad_residual.shape[-1])


def _level_setup_context(ctx, inputs, output) -> None:
    x, mode = inputs
    ctx.save_for_backward(output[2])
    ctx.size = (x.shape[-2], x.shape[-1])
    ctx.coarse = (output[1].shape[-2], output[1].shape[-1])
    ctx.mode = mode


def _level_backward(ctx, grad_residual, grad_down, _grad_argmax):
    (argmax,) = ctx.saved_tensors
    if grad_down is None:  # only the residual was used
        grad_down = grad_residual.new_zeros(*grad_residual.shape[:2], *ctx.coarse)
    if grad_residual is None:
        grad_residual = grad_down.new_zeros(*grad_down.shape[:2], *ctx.size)
    return _pyr_level_backward_op(grad_residual, grad_down, argmax, ctx.mode), None


_pyr_level_op.register_autograd(_level_backward, setup_context=_level_setup_context)


@torch.library.custom_op("flowkit::pyr_level_inverse", mutates_args=())
def _pyr_level_inverse_op(residual: torch.Tensor, down: torch.Tensor, mode: str) -> torch.Tensor:
    """``residual + up(down)``."""
    if runs_triton(residual):
        from .pyr_kernels import pyr_level_inverse_triton

        return pyr_level_inverse_triton(residual, down, mode)
    return like_map(pyr_level_inverse_reference(residual, down, mode), residual)


@_pyr_level_inverse_op.register_fake
def _pyr_level_inverse_fake(residual: torch.Tensor, down: torch.Tensor, mode: str):
    return empty_map(residual, residual.shape[-2], residual.shape[-1])


def _inverse_setup_context(ctx, inputs, output) -> None:
    _, down, mode = inputs
    ctx.coarse = (down.shape[-2], down.shape[-1])
    ctx.mode = mode


def _inverse_backward(ctx, grad: torch.Tensor):
    return grad, pyr_up_backward_op(grad, *ctx.coarse, ctx.mode), None


_pyr_level_inverse_op.register_autograd(_inverse_backward, setup_context=_inverse_setup_context)


def pyr_level(x: torch.Tensor, mode: PyramidMode | str) -> tuple[torch.Tensor, torch.Tensor]:
    """One Laplacian-pyramid level: ``down = pyr_down(x)``, ``residual = x - pyr_up(down)``.

    ``up`` targets ``x``'s own size, so :func:`pyr_level_inverse` recovers ``x`` exactly (to
    rounding) whatever ``down`` is. Its Triton path (dispatched like :func:`pyr_down`) is two
    kernels: ``down``, then ``up`` with the subtraction fused (no up-sampled temporary). See
    :func:`pyr_down` and :func:`pyr_up` for the two modes.

    Args:
        x: ``[N, C, H, W]`` float16/bfloat16/float32/float64, NCHW or channels-last.
        mode: :class:`PyramidMode` or its value.

    Returns:
        ``(residual [N, C, H, W], down [N, C, h, w])`` in ``x.dtype``.

    Raises:
        ValueError: for a size the mode cannot split (the message names the nearest valid ones).

    Example:
        >>> x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
        >>> residual, down = pyr_level(x, "pyramidflow")
        >>> torch.allclose(pyr_level_inverse(residual, down, "pyramidflow"), x)
        True
    """
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    pyr_down_size(x.shape[-2], x.shape[-1], mode)
    if use_pyramid_kernel("pyr_level", mode, x.numel(), x):
        residual, down, _ = _pyr_level_op(x, mode.value)
        return residual, down
    return pyr_level_reference(x, mode)


def pyr_level_inverse(
    residual: torch.Tensor, down: torch.Tensor, mode: PyramidMode | str
) -> torch.Tensor:
    """Inverse of :func:`pyr_level`: ``x = residual + pyr_up(down, residual.shape[-2:])``.

    Args:
        residual: ``[N, C, H, W]``.
        down: ``[N, C, h, w]`` with ``(h, w)`` the ``pyr_down`` size of ``(H, W)``.
        mode: :class:`PyramidMode` or its value.

    Returns:
        ``[N, C, H, W]`` in ``residual.dtype``.

    Raises:
        ValueError: for mismatched shapes.
    """
    mode = PyramidMode(mode)
    check_pyramid_input(residual, "residual")
    check_pyramid_input(down, "down")
    if residual.shape[:2] != down.shape[:2]:
        raise ValueError(f"residual {tuple(residual.shape)} and down {tuple(down.shape)} must "
                         "share batch and channels")
    check_up_size((down.shape[-2], down.shape[-1]), (residual.shape[-2], residual.shape[-1]),
                  mode)
    if use_pyramid_kernel("pyr_level_inverse", mode, residual.numel(), residual, down):
        return _pyr_level_inverse_op(residual, down, mode.value)
    return pyr_level_inverse_reference(residual, down, mode)
