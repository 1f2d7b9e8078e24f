"""Triton kernels and launchers of the fused affine coupling (needs Triton).

One program handles ``BLOCK`` elements of one sample (grid: element blocks x batch); the forward
writes ``v`` and one float32 (float64) partial logdet per program, summed by the launcher; the
backward reads ``dv``, ``u`` and ``h`` and writes ``du`` and ``dh`` in one pass, recomputing
``s``. See :mod:`flowkit.kernels.coupling` for the maths, the layout and the public ops.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .coupling import check_coupling_args, compute_dtype, kernel_memory_format
from .soft_clamp import SOFT_CLAMP_SCALE, ClampFn

__all__ = ["BLOCK", "affine_coupling_backward_triton", "affine_coupling_triton"]

_SCALE = tl.constexpr(SOFT_CLAMP_SCALE)
_QUARTER_PI = tl.constexpr(math.pi / 4)
_TAN_3PI_8 = tl.constexpr(1 + math.sqrt(2))
_PI_4_LOW = tl.constexpr(3.061616997868382943065e-17)  # pi/4 - float64(pi/4)
_CLAMP_CODE = {ClampFn.ATAN: 0, ClampFn.TANH: 1}
BLOCK = 1024
"""Elements of one sample per program."""


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _atan(z):
    """``atan(z)`` without libdevice, accurate to float64 rounding: Cephes' ``atan`` (range
    reduction to ``|r| <= 0.66`` and a degree-4/5 rational approximation)."""
    a = tl.abs(z)
    big = a > _TAN_3PI_8
    mid = a > 0.66
    r = tl.where(big, -1.0 / tl.maximum(a, _TAN_3PI_8), tl.where(mid, (a - 1.0) / (a + 1.0), a))
    # base angle in multiples of pi/4; built from a tensor so float64 keeps all bits of pi/4
    quarters = tl.where(big, 2.0, tl.where(mid, 1.0, 0.0)).to(z.dtype)
    r2 = r * r
    p = (((-8.750608600031904122785e-1 * r2 - 1.615753718733365076637e1) * r2
          - 7.500855792314704667340e1) * r2 - 1.228866684490136173410e2) * r2
    p = p - 6.485021904942025371773e1
    q = ((((r2 + 2.485846490142306297962e1) * r2 + 1.650270098316988542046e2) * r2
          + 4.328810604912902668951e2) * r2 + 4.853903996359136964868e2) * r2
    q = q + 1.945506571482613964425e2
    res = quarters * _QUARTER_PI + (r + r * (r2 * p / q) + quarters * _PI_4_LOW)
    return tl.where(z < 0, -res, res)


@triton.jit
def _tanh_and_slope(z):
    """``tanh(z)`` and ``1 - tanh(z)^2`` without libdevice, from ``e = exp(-2|z|)`` (no
    overflow; the slope as ``4e / (1 + e)^2`` avoids the cancellation of ``1 - tanh^2``)."""
    e = tl.exp(-2.0 * tl.abs(z))
    res = (1.0 - e) / (1.0 + e)
    return tl.where(z < 0, -res, res), 4.0 * e / ((1.0 + e) * (1.0 + e))


@triton.jit
def _soft_clamp_and_slope(hs, clamp, clamp_fn):
    """``s = soft_clamp(hs)`` and ``ds/dhs``; ``clamp_fn`` 0 is atan, 1 tanh (a runtime value,
    the same for every program: one compiled kernel serves both)."""
    z = hs / clamp
    if clamp_fn == 0:
        # tensor operands first: constexpr * tensor would stay a constexpr
        s = _atan(z) * _SCALE * clamp
        slope = 1.0 / (1.0 + z * z) * _SCALE
    else:
        th, slope = _tanh_and_slope(z)
        s = th * clamp
    return s, slope


@triton.jit
def _offsets(N, L, BLOCK: tl.constexpr):
    """Sample, element offsets into ``u`` [B, N] and into the scale half of ``h`` [B, 2N].

    ``h``'s scale and shift halves alternate in runs of ``L`` elements: ``L = N`` for contiguous
    tensors (one run per sample), ``L = C`` for channels-last (one run per pixel).
    """
    b = tl.program_id(1).to(tl.int64)
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    hs_off = b * 2 * N + (i // L) * 2 * L + i % L
    return b, b * N + i, hs_off, i < N


@triton.jit
def _coupling_fwd_kernel(
    u_ptr, h_ptr, v_ptr, part_ptr, N, L, clamp, clamp_fn, reverse,
    COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    b, u_off, hs_off, ok = _offsets(N, L, BLOCK)
    u = tl.load(u_ptr + u_off, mask=ok, other=0.0).to(COMPUTE)
    hs = tl.load(h_ptr + hs_off, mask=ok, other=0.0).to(COMPUTE)
    t = tl.load(h_ptr + hs_off + L, mask=ok, other=0.0).to(COMPUTE)
    s, _ = _soft_clamp_and_slope(hs, clamp, clamp_fn)
    if reverse != 0:
        v = (u - t) * tl.exp(-s)
    else:
        v = u * tl.exp(s) + t
    tl.store(v_ptr + u_off, v.to(v_ptr.dtype.element_ty), mask=ok)
    # masked lanes load h_s = 0, so s = 0 there and the partial sum needs no mask
    tl.store(part_ptr + b * tl.num_programs(0) + tl.program_id(0), tl.sum(s, axis=0))


@triton.jit
def _coupling_bwd_kernel(
    dv_ptr, dlogdet_ptr, u_ptr, h_ptr, du_ptr, dh_ptr, N, L, clamp, clamp_fn, reverse,
    COMPUTE: tl.constexpr, BLOCK: tl.constexpr,
):
    b, u_off, hs_off, ok = _offsets(N, L, BLOCK)
    dv = tl.load(dv_ptr + u_off, mask=ok, other=0.0).to(COMPUTE)
    u = tl.load(u_ptr + u_off, mask=ok, other=0.0).to(COMPUTE)
    hs = tl.load(h_ptr + hs_off, mask=ok, other=0.0).to(COMPUTE)
    g = tl.load(dlogdet_ptr + b).to(COMPUTE)
    s, slope = _soft_clamp_and_slope(hs, clamp, clamp_fn)
    if reverse != 0:
        t = tl.load(h_ptr + hs_off + L, mask=ok, other=0.0).to(COMPUTE)
        du = dv * tl.exp(-s)
        dt = -du
        ds = -du * (u - t) - g
    else:
        e = tl.exp(s)
        du = dv * e
        dt = dv
        ds = du * u + g
    tl.store(du_ptr + u_off, du.to(du_ptr.dtype.element_ty), mask=ok)
    tl.store(dh_ptr + hs_off, (ds * slope).to(dh_ptr.dtype.element_ty), mask=ok)
    tl.store(dh_ptr + hs_off + L, dt.to(dh_ptr.dtype.element_ty), mask=ok)


# ----------------------------------------------------------------------------------------------
# Launchers
# ----------------------------------------------------------------------------------------------


def _launch_args(u: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str,
                 reverse: bool) -> tuple[torch.memory_format, tuple, dict[str, object]]:
    """Layout, grid and the shared scalar/constexpr kernel arguments."""
    fmt = kernel_memory_format(u, h)
    n = u[0].numel()
    inner = u.shape[1] if fmt == torch.channels_last else n
    grid = (triton.cdiv(n, BLOCK), u.shape[0])
    consts = {
        "N": n, "L": inner, "clamp": float(clamp), "clamp_fn": _CLAMP_CODE[ClampFn(clamp_fn)],
        "reverse": int(reverse), "COMPUTE": _tl_dtype(compute_dtype(u.dtype)), "BLOCK": BLOCK,
    }
    return fmt, grid, consts


def _tl_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def affine_coupling_triton(
    u: torch.Tensor, h: torch.Tensor, clamp: float, clamp_fn: ClampFn | str, reverse: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton launch of :func:`affine_coupling_forward` (``reverse=False``) or
    :func:`affine_coupling_inverse` (``reverse=True``); no autograd, no dispatch.

    Args:
        u: ``x`` (forward) or ``y`` (inverse), ``[B, C, *spatial]``.
        h: subnet output ``[B, 2C, *spatial]``, scales then shifts.
        clamp: soft-clamp bound.
        clamp_fn: soft-clamp function.
        reverse: compute the inverse.

    Returns:
        ``(v, logdet)``: ``v`` like ``u``; ``logdet`` ``[B]`` in float32 (float64 for float64).
    """
    check_coupling_args(u, h, clamp, clamp_fn)
    fmt, grid, consts = _launch_args(u, h, clamp, clamp_fn, reverse)
    u_c, h_c = u.contiguous(memory_format=fmt), h.contiguous(memory_format=fmt)
    v = torch.empty_like(u_c, memory_format=fmt)
    partials = torch.empty((u.shape[0], grid[0]), device=u.device, dtype=compute_dtype(u.dtype))
    _coupling_fwd_kernel[grid](u_c, h_c, v, partials, **consts)
    logdet = partials.sum(1)
    return v, -logdet if reverse else logdet


def affine_coupling_backward_triton(
    grad_v: torch.Tensor,
    grad_logdet: torch.Tensor,
    u: torch.Tensor,
    h: torch.Tensor,
    clamp: float,
    clamp_fn: ClampFn | str,
    reverse: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients of :func:`affine_coupling_triton` wrt ``u`` and ``h``, by one Triton pass.

    Forward: ``du = dv e^s``, ``dt = dv``, ``ds = dv u e^s + dlogdet``. Inverse:
    ``du = dv e^-s``, ``dt = -du``, ``ds = -du (u - t) - dlogdet``. Then
    ``dh_s = ds * soft_clamp'(h_s)``.

    Args:
        grad_v: gradient wrt ``v``, like ``u``.
        grad_logdet: gradient wrt ``logdet``, ``[B]``.
        u: the input of the pass, ``[B, C, *spatial]``.
        h: subnet output ``[B, 2C, *spatial]``.
        clamp: soft-clamp bound.
        clamp_fn: soft-clamp function.
        reverse: whether the pass was the inverse.

    Returns:
        ``(du, dh)`` shaped like ``u`` and ``h``.
    """
    fmt, grid, consts = _launch_args(u, h, clamp, clamp_fn, reverse)
    u_c, h_c = u.contiguous(memory_format=fmt), h.contiguous(memory_format=fmt)
    grad_u = torch.empty_like(u_c, memory_format=fmt)
    grad_h = torch.empty_like(h_c, memory_format=fmt)
    _coupling_bwd_kernel[grid](
        grad_v.contiguous(memory_format=fmt), grad_logdet.contiguous(), u_c, h_c, grad_u, grad_h,
        **consts,
    )
    return grad_u, grad_h
