"""Fused affine-coupling epilogue: soft clamp, exp, affine map and per-sample logdet in one pass.

An affine coupling's subnet returns ``h`` with ``2 * C`` channels for an active half of ``C``
channels. **Layout:** ``h[:, :C]`` are the raw log-scales, ``h[:, C:]`` the shifts (the order of
``h.chunk(2, dim=1)``). With ``s = soft_clamp(h[:, :C], clamp, clamp_fn)`` and ``t = h[:, C:]``:

.. math::

    \\text{forward:}\\; y = x \\, e^{s} + t, \\quad \\log|\\det| = \\textstyle\\sum_{c,h,w} s;
    \\qquad \\text{inverse:}\\; x = (y - t) \\, e^{-s}, \\quad \\log|\\det| = -\\textstyle\\sum s.

Unfused, PyTorch reads and writes ``s``, ``exp(s)``, the product and the sum as separate tensors;
the kernel reads ``x`` and ``h`` once and writes ``y`` and one float32 partial sum per block. Its
backward reads ``dy``, ``x``, ``h`` and writes ``dx`` and ``dh`` in one pass, recomputing ``s``.
Tensors are ``[B, C, *spatial]``; contiguous and channels-last ``[B, C, H, W]`` inputs are
processed in place, other strides are copied first. The kernels are in
:mod:`flowkit.kernels.coupling_triton`, imported only when they run; they run only for CUDA
tensors where the ``coupling`` dispatch table holds a winning validation, or where
``FLOWKIT_KERNELS=1`` forces them (see :mod:`flowkit.kernels.dispatch`).
"""

from __future__ import annotations

import torch

from .dispatch import dtype_precision, use_triton
from .dispatch_table import OpFamily, size_class
from .soft_clamp import ClampFn, check_clamp, soft_clamp

__all__ = [
    "affine_coupling_forward",
    "affine_coupling_forward_reference",
    "affine_coupling_inverse",
    "affine_coupling_inverse_reference",
    "check_coupling_args",
    "compute_dtype",
    "coupling_shape_class",
    "kernel_memory_format",
    "use_coupling_kernel",
]

# ----------------------------------------------------------------------------------------------
# References, validation, custom ops
# ----------------------------------------------------------------------------------------------


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Arithmetic and logdet dtype: float32 for half types, float64 for float64."""
    return torch.promote_types(dtype, torch.float32)


def kernel_memory_format(u: torch.Tensor, h: torch.Tensor) -> torch.memory_format:
    """The layout the kernels run in: channels-last when both are, else contiguous."""
    channels_last = (
        u.dim() == 4
        and not (u.is_contiguous() and h.is_contiguous())
        and u.is_contiguous(memory_format=torch.channels_last)
        and h.is_contiguous(memory_format=torch.channels_last)
    )
    return torch.channels_last if channels_last else torch.contiguous_format


def coupling_shape_class(u: torch.Tensor, grad: bool) -> str:
    """The dispatch key of a call's shape: a bucket of the active half's size, and the pass.

    Example:
        >>> import torch
        >>> coupling_shape_class(torch.zeros(2, 16, 256, 256), grad=False)
        'n<=2^22:fwd'
    """
    return f"{size_class(u.numel())}:{'fwd_bwd' if grad else 'fwd'}"


def use_coupling_kernel(op: str, u: torch.Tensor, h: torch.Tensor) -> bool:
    """Whether ``op`` (``affine_coupling_forward`` or ``_inverse``) runs the Triton kernels."""
    grad = torch.is_grad_enabled() and (u.requires_grad or h.requires_grad)
    shape_class = coupling_shape_class(u, grad)
    return use_triton(OpFamily.COUPLING, op, dtype_precision(u.dtype), shape_class, u, h)


def _scale_shift(
    u: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, t)`` in the compute dtype, after validating the arguments."""
    check_coupling_args(u, h, clamp, clamp_fn)
    h_s, t = h.to(compute_dtype(u.dtype)).chunk(2, dim=1)
    return soft_clamp(h_s, clamp, clamp_fn), t


def affine_coupling_forward_reference(
    x: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str = ClampFn.ATAN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch semantics of :func:`affine_coupling_forward`."""
    s, t = _scale_shift(x, h, clamp, clamp_fn)
    y = x.to(s.dtype) * torch.exp(s) + t
    return y.to(x.dtype), s.flatten(1).sum(1)


def affine_coupling_inverse_reference(
    y: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str = ClampFn.ATAN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-PyTorch semantics of :func:`affine_coupling_inverse`."""
    s, t = _scale_shift(y, h, clamp, clamp_fn)
    x = (y.to(s.dtype) - t) * torch.exp(-s)
    return x.to(y.dtype), -s.flatten(1).sum(1)


def check_coupling_args(
    u: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str
) -> None:
    """Validate the arguments of an affine coupling."""
    for name, t in (("x", u), ("h", h)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    expected = (u.shape[0], 2 * u.shape[1], *u.shape[2:]) if u.dim() >= 2 else None
    if expected is None or tuple(h.shape) != expected:
        raise ValueError(
            f"expected x [B, C, ...] and h [B, 2C, ...] (scales then shifts), got x "
            f"{tuple(u.shape)} and h {tuple(h.shape)}; the subnet must output 2 * C channels"
        )
    if h.dtype != u.dtype or h.device != u.device:
        raise ValueError(
            f"h is {h.dtype} on {h.device} but x is {u.dtype} on {u.device}; convert it with .to(x)"
        )
    check_clamp(clamp, clamp_fn)


@torch.library.custom_op("flowkit::affine_coupling", mutates_args=())
def _coupling_op(
    u: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: str, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    from .coupling_triton import affine_coupling_triton

    return affine_coupling_triton(u, h, clamp, clamp_fn, reverse)


@_coupling_op.register_fake
def _coupling_op_fake(u, h, clamp, clamp_fn, reverse):
    v = torch.empty_like(u, memory_format=kernel_memory_format(u, h))
    return v, u.new_empty((u.shape[0],), dtype=compute_dtype(u.dtype))


@torch.library.custom_op("flowkit::affine_coupling_backward", mutates_args=())
def _coupling_backward_op(
    grad_v: torch.Tensor,
    grad_logdet: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    clamp: float,
    clamp_fn: str,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    from .coupling_triton import affine_coupling_backward_triton

    return affine_coupling_backward_triton(grad_v, grad_logdet, u, h, clamp, clamp_fn, reverse)


@_coupling_backward_op.register_fake
def _coupling_backward_op_fake(grad_v, grad_logdet, u, h, clamp, clamp_fn, reverse):
    fmt = kernel_memory_format(u, h)
    return torch.empty_like(u, memory_format=fmt), torch.empty_like(h, memory_format=fmt)


def _coupling_setup_context(ctx, inputs, output) -> None:
    u, h, clamp, clamp_fn, reverse = inputs
    ctx.save_for_backward(u, h)
    ctx.clamp, ctx.clamp_fn, ctx.reverse = clamp, clamp_fn, reverse


def _coupling_backward(ctx, grad_v, grad_logdet):
    u, h = ctx.saved_tensors
    grad_u, grad_h = _coupling_backward_op(
        grad_v, grad_logdet, u, h, ctx.clamp, ctx.clamp_fn, ctx.reverse
    )
    return grad_u, grad_h, None, None, None


_coupling_op.register_autograd(_coupling_backward, setup_context=_coupling_setup_context)


# ----------------------------------------------------------------------------------------------
# Public ops
# ----------------------------------------------------------------------------------------------


def affine_coupling_forward(
    x: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str = ClampFn.ATAN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Affine coupling of the active half: ``y = x * exp(s) + t`` and its log-determinant.

    ``s = soft_clamp(h[:, :C], clamp, clamp_fn)``, ``t = h[:, C:]``,
    ``logdet = sum_{c, spatial} s``. Differentiable wrt ``x`` and ``h``. Runs the fused Triton
    kernels where :func:`use_coupling_kernel` says so (CUDA, a validated table row or forced),
    else :func:`affine_coupling_forward_reference`.

    Args:
        x: active half ``[B, C, *spatial]``.
        h: subnet output ``[B, 2C, *spatial]``: raw log-scales, then shifts.
        clamp: soft-clamp bound, positive.
        clamp_fn: ``"atan"`` or ``"tanh"`` (a :class:`~flowkit.kernels.soft_clamp.ClampFn`).

    Returns:
        ``(y, logdet)``: ``y`` like ``x``; ``logdet`` ``[B]`` in float32 (float64 for float64).

    Raises:
        TypeError: if ``x`` or ``h`` is not a tensor, or ``clamp`` not a number.
        ValueError: on mismatched shapes, dtypes or devices, a non-positive ``clamp`` or an
            unknown ``clamp_fn``.

    Example:
        >>> import torch
        >>> x, h = torch.randn(2, 3, 4, 4), torch.zeros(2, 6, 4, 4)
        >>> y, logdet = affine_coupling_forward(x, h, 2.0, "atan")
        >>> torch.equal(y, x), logdet.tolist()
        (True, [0.0, 0.0])
    """
    check_coupling_args(x, h, clamp, clamp_fn)
    if use_coupling_kernel("affine_coupling_forward", x, h):
        return _coupling_op(x, h, float(clamp), ClampFn(clamp_fn).value, False)
    return affine_coupling_forward_reference(x, h, clamp, clamp_fn)


def affine_coupling_inverse(
    y: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str = ClampFn.ATAN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`affine_coupling_forward`: ``x = (y - t) * exp(-s)``, ``logdet = -sum s``.

    Args:
        y: transformed active half ``[B, C, *spatial]``.
        h: subnet output ``[B, 2C, *spatial]`` (the same as in the forward).
        clamp: soft-clamp bound, positive.
        clamp_fn: ``"atan"`` or ``"tanh"``.

    Returns:
        ``(x, logdet)``: ``x`` like ``y``; ``logdet`` ``[B]``, the log-determinant of the inverse.

    Raises:
        TypeError: if ``y`` or ``h`` is not a tensor, or ``clamp`` not a number.
        ValueError: on mismatched shapes, dtypes or devices, a non-positive ``clamp`` or an
            unknown ``clamp_fn``.

    Example:
        >>> import torch
        >>> x, h = torch.randn(2, 3, 4, 4), torch.randn(2, 6, 4, 4)
        >>> y, logdet = affine_coupling_forward(x, h, 2.0)
        >>> x_rec, logdet_inv = affine_coupling_inverse(y, h, 2.0)
        >>> torch.allclose(x_rec, x, atol=1e-6), torch.allclose(logdet_inv, -logdet)
        (True, True)
    """
    check_coupling_args(y, h, clamp, clamp_fn)
    if use_coupling_kernel("affine_coupling_inverse", y, h):
        return _coupling_op(y, h, float(clamp), ClampFn(clamp_fn).value, True)
    return affine_coupling_inverse_reference(y, h, clamp, clamp_fn)
