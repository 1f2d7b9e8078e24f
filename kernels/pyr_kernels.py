"""Triton kernels and launchers of the Laplacian-pyramid ops, forward and backward.

Every linear piece of both pyramids is separable: a 2-D op is ``M_h @ X @ M_w^T`` for a banded
1-D operator ``M`` whose band has at most 6 entries. :func:`_separable_kernel` computes one output
tile of any such op by gathering the band straight from the input; the band weights (reflect-101
folding included) come from a ``[n_out, band]`` table per axis, built once per size and device by
:func:`_band_table` from the op's definition and cached (dyadic numbers, exact in float32), so:

* gaussian ``down`` reads the 5x5 stride-2 window and never forms the blurred map;
* ``up`` (both modes) is polyphase: each output pixel reads its 3x3 coarse neighbours with the
  weights of its phase, never forming the zero-inserted or nearest-upsampled map;
* the adjoints (``down^T``, ``up^T``) are gathers too (no atomics), with the reflect-101 border
  folded into the weights, exact for every size down to 2;
* an epilogue adds to or subtracts from a third tensor, which fuses the Laplacian level
  (``x - up(down)``), its inverse (``r + up(down)``) and their gradients.

PyramidFlow's ``down`` (blur, then 2x2 max-pool) is not separable: :func:`_maxpool_down_fwd_kernel`
blurs the four pixels of each window from one 6x6 input footprint, keeps the first maximum in
row-major order and writes its index (uint8), and :func:`_maxpool_down_bwd_kernel` gathers, for
each input pixel, the gradients of the 3x3 windows whose argmax reaches it.

Launchers own allocation (outputs keep the input's memory format: NCHW or channels-last), the
grid (planes x row tiles x column tiles) and strides (any strides are read as they are, so
channels-last and expanded gradients need no copy); offsets are int64. Accumulation is float32
(float64 for float64 inputs); outputs are in the input dtype.
"""

from __future__ import annotations

import enum
import functools

import torch
import triton
import triton.language as tl

from .pyr_common import (
    ARGMAX_DTYPE,
    BINOMIAL_NORM,
    BINOMIAL_TAPS,
    ZERO_INSERT_GAIN,
    PyramidMode,
    check_pyramid_input,
    check_up_size,
    empty_argmax,
    empty_map,
    pyr_down_size,
)
from .pyr_reference import reflect101_index

__all__ = [
    "pyr_down_backward_triton",
    "pyr_down_triton",
    "pyr_level_backward_triton",
    "pyr_level_inverse_triton",
    "pyr_level_triton",
    "pyr_up_backward_triton",
    "pyr_up_triton",
]

BLOCK_H = 16
BLOCK_W = 32
NUM_WARPS = 4

_TAP_EDGE = tl.constexpr(BINOMIAL_TAPS[0] / BINOMIAL_NORM)
_TAP_NEAR = tl.constexpr(BINOMIAL_TAPS[1] / BINOMIAL_NORM)
_TAP_MID = tl.constexpr(BINOMIAL_TAPS[2] / BINOMIAL_NORM)


class _AxisOp(enum.IntEnum):
    """The banded 1-D operators (output index ``o``, input index ``i``)."""

    GAUSS_DOWN = 0  # reflect-101 blur, keep even pixels: fine -> coarse
    GAUSS_DOWN_T = 1  # its adjoint: coarse -> fine
    GAUSS_UP = 2  # zero-insert to 2n, reflect-101 blur x2, crop: coarse -> fine
    GAUSS_UP_T = 3  # every adjoint ``X_T`` is ``X + 1`` (used by ``_axis_weight``)
    NEAREST_UP = 4  # nearest x2, zero-padded blur: coarse -> fine
    NEAREST_UP_T = 5


# (band length, whether the output is the coarse axis) of each operator: the candidate inputs
# of output o are first + 0..band-1, with first = 2o - 2 (coarse out) or o // 2 - 1 (fine out).
_BAND = {
    _AxisOp.GAUSS_DOWN: (5, True),
    _AxisOp.GAUSS_DOWN_T: (3, False),
    _AxisOp.GAUSS_UP: (3, False),
    _AxisOp.GAUSS_UP_T: (5, True),
    _AxisOp.NEAREST_UP: (3, False),
    _AxisOp.NEAREST_UP_T: (6, True),
}


class _Epilogue(enum.IntEnum):
    """What a kernel stores: ``op(x)``, ``base + op(x)`` or ``base - op(x)``."""

    NONE = 0
    ADD = 1
    SUBTRACT_FROM = 2


_EPI_NONE = tl.constexpr(int(_Epilogue.NONE))
_EPI_ADD = tl.constexpr(int(_Epilogue.ADD))


# ----------------------------------------------------------------------------- jit helpers


@triton.jit
def _mix5(v0, v1, v2, v3, v4):
    """The 1-D binomial blur of five consecutive values."""
    return _TAP_EDGE * (v0 + v4) + _TAP_NEAR * (v1 + v3) + _TAP_MID * v2


@triton.jit
def _tap_at(t):
    """Binomial tap ``t`` (0..4) for an integer tensor ``t``; 0 outside."""
    mid = tl.where(t == 2, _TAP_MID, 0.0)
    near = tl.where((t == 1) | (t == 3), _TAP_NEAR, mid)
    return tl.where((t == 0) | (t == 4), _TAP_EDGE, near)


@triton.jit
def _band_start(o, COARSE_OUT: tl.constexpr):
    if COARSE_OUT:
        first = 2 * o - 2
    else:
        first = o // 2 - 1
    return first


@triton.jit
def _plane_offset(plane, C, s_n, s_c):
    n = (plane // C).to(tl.int64)
    c = (plane % C).to(tl.int64)
    return n * s_n + c * s_c


@triton.jit
def _tile_offsets(rows, cols, s_h, s_w):
    return rows.to(tl.int64)[:, None] * s_h + cols.to(tl.int64)[None, :] * s_w


@triton.jit
def _apply_epilogue(acc, base_ptr, offsets, mask, EPILOGUE: tl.constexpr):
    if EPILOGUE != _EPI_NONE:
        base = tl.load(base_ptr + offsets, mask=mask, other=0.0).to(acc.dtype)
        if EPILOGUE == _EPI_ADD:
            acc = base + acc
        else:
            acc = base - acc
    return acc


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _separable_kernel(
    x_ptr, wy_ptr, wx_ptr, base_ptr, out_ptr,
    C, H_in, W_in, H_out, W_out,
    sx_n, sx_c, sx_h, sx_w,
    sb_n, sb_c, sb_h, sb_w,
    so_n, so_c, so_h, so_w,
    BAND: tl.constexpr, COARSE_OUT: tl.constexpr, EPILOGUE: tl.constexpr,
    ACC_DTYPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """``out = [base +/-] M_h @ x @ M_w^T`` for one ``BLOCK_H x BLOCK_W`` tile of one plane.

    ``wy_ptr``/``wx_ptr`` hold the band of ``M_h``/``M_w``: ``[n_out, BAND]`` float32, entry
    ``(o, t)`` weighting input ``first(o) + t`` (zero where that input does not exist).
    """
    plane = tl.program_id(0)
    oy = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ox = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    in_y = oy < H_out
    in_x = ox < W_out
    x_plane = x_ptr + _plane_offset(plane, C, sx_n, sx_c)
    first_y = _band_start(oy, COARSE_OUT)
    first_x = _band_start(ox, COARSE_OUT)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC_DTYPE)
    for ty in tl.static_range(BAND):
        iy = first_y + ty
        wy = tl.load(wy_ptr + oy * BAND + ty, mask=in_y, other=0.0)
        ok_y = (iy >= 0) & (iy < H_in) & (wy != 0.0)
        rows = x_plane + iy.to(tl.int64) * sx_h
        for tx in tl.static_range(BAND):
            ix = first_x + tx
            wx = tl.load(wx_ptr + ox * BAND + tx, mask=in_x, other=0.0)
            ok_x = (ix >= 0) & (ix < W_in) & (wx != 0.0)
            v = tl.load(rows[:, None] + ix.to(tl.int64)[None, :] * sx_w,
                        mask=ok_y[:, None] & ok_x[None, :], other=0.0)
            acc += (wy[:, None] * wx[None, :]).to(ACC_DTYPE) * v.to(ACC_DTYPE)
    out_mask = in_y[:, None] & in_x[None, :]
    acc = _apply_epilogue(acc, base_ptr + _plane_offset(plane, C, sb_n, sb_c),
                          _tile_offsets(oy, ox, sb_h, sb_w), out_mask, EPILOGUE)
    out = out_ptr + _plane_offset(plane, C, so_n, so_c) + _tile_offsets(oy, ox, so_h, so_w)
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=out_mask)


@triton.jit
def _load_zero_padded(x_plane, rows, cols, H, W, s_h, s_w, ACC_DTYPE: tl.constexpr):
    ok = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
    v = tl.load(x_plane + _tile_offsets(rows, cols, s_h, s_w), mask=ok, other=0.0)
    return v.to(ACC_DTYPE)


@triton.jit
def _row_blur_pair(x_plane, rows, cols, H, W, s_h, s_w, ACC_DTYPE: tl.constexpr):
    """Horizontal blurs centred on ``cols + 2`` and ``cols + 3`` of one input row per tile row."""
    v0 = _load_zero_padded(x_plane, rows, cols, H, W, s_h, s_w, ACC_DTYPE)
    v1 = _load_zero_padded(x_plane, rows, cols + 1, H, W, s_h, s_w, ACC_DTYPE)
    v2 = _load_zero_padded(x_plane, rows, cols + 2, H, W, s_h, s_w, ACC_DTYPE)
    v3 = _load_zero_padded(x_plane, rows, cols + 3, H, W, s_h, s_w, ACC_DTYPE)
    v4 = _load_zero_padded(x_plane, rows, cols + 4, H, W, s_h, s_w, ACC_DTYPE)
    v5 = _load_zero_padded(x_plane, rows, cols + 5, H, W, s_h, s_w, ACC_DTYPE)
    return _mix5(v0, v1, v2, v3, v4), _mix5(v1, v2, v3, v4, v5)


@triton.jit
def _maxpool_down_fwd_kernel(
    x_ptr, out_ptr, argmax_ptr,
    C, H, W, h, w,
    sx_n, sx_c, sx_h, sx_w,
    so_n, so_c, so_h, so_w,
    sa_n, sa_c, sa_h, sa_w,
    ACC_DTYPE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """PyramidFlow's down: zero-padded blur of the 4 pixels of each 2x2 window, then their max."""
    plane = tl.program_id(0)
    oy = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    ox = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    x_plane = x_ptr + _plane_offset(plane, C, sx_n, sx_c)
    top = 2 * oy - 2
    left = 2 * ox - 2
    a0, b0 = _row_blur_pair(x_plane, top, left, H, W, sx_h, sx_w, ACC_DTYPE)
    a1, b1 = _row_blur_pair(x_plane, top + 1, left, H, W, sx_h, sx_w, ACC_DTYPE)
    a2, b2 = _row_blur_pair(x_plane, top + 2, left, H, W, sx_h, sx_w, ACC_DTYPE)
    a3, b3 = _row_blur_pair(x_plane, top + 3, left, H, W, sx_h, sx_w, ACC_DTYPE)
    a4, b4 = _row_blur_pair(x_plane, top + 4, left, H, W, sx_h, sx_w, ACC_DTYPE)
    a5, b5 = _row_blur_pair(x_plane, top + 5, left, H, W, sx_h, sx_w, ACC_DTYPE)
    # Row-major order (0,0), (0,1), (1,0), (1,1); a strict '>' keeps the first of equal maxima.
    best = _mix5(a0, a1, a2, a3, a4)
    arg = tl.zeros((BLOCK_H, BLOCK_W), dtype=tl.int32)
    candidate = _mix5(b0, b1, b2, b3, b4)
    arg = tl.where(candidate > best, 1, arg)
    best = tl.where(candidate > best, candidate, best)
    candidate = _mix5(a1, a2, a3, a4, a5)
    arg = tl.where(candidate > best, 2, arg)
    best = tl.where(candidate > best, candidate, best)
    candidate = _mix5(b1, b2, b3, b4, b5)
    arg = tl.where(candidate > best, 3, arg)
    best = tl.where(candidate > best, candidate, best)
    mask = (oy < h)[:, None] & (ox < w)[None, :]
    out = out_ptr + _plane_offset(plane, C, so_n, so_c) + _tile_offsets(oy, ox, so_h, so_w)
    tl.store(out, best.to(out_ptr.dtype.element_ty), mask=mask)
    arg_out = (argmax_ptr + _plane_offset(plane, C, sa_n, sa_c)
               + _tile_offsets(oy, ox, sa_h, sa_w))
    tl.store(arg_out, arg.to(argmax_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _maxpool_down_bwd_kernel(
    g_ptr, argmax_ptr, base_ptr, out_ptr,
    C, H, W, h, w,
    sg_n, sg_c, sg_h, sg_w,
    sa_n, sa_c, sa_h, sa_w,
    sb_n, sb_c, sb_h, sb_w,
    so_n, so_c, so_h, so_w,
    EPILOGUE: tl.constexpr, ACC_DTYPE: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):
    """Input gradient of the max-pool down: each input pixel gathers the 3x3 windows around it,
    each window contributing ``g * k[P - p + 2] * k[Q - q + 2]`` at its argmax ``(P, Q)``."""
    plane = tl.program_id(0)
    p = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    q = tl.program_id(2) * BLOCK_W + tl.arange(0, BLOCK_W)
    g_plane = g_ptr + _plane_offset(plane, C, sg_n, sg_c)
    a_plane = argmax_ptr + _plane_offset(plane, C, sa_n, sa_c)
    acc = tl.zeros((BLOCK_H, BLOCK_W), dtype=ACC_DTYPE)
    for dy in tl.static_range(3):
        wy = p // 2 - 1 + dy
        ok_y = (wy >= 0) & (wy < h)
        for dx in tl.static_range(3):
            wx = q // 2 - 1 + dx
            ok = ok_y[:, None] & ((wx >= 0) & (wx < w))[None, :]
            g = tl.load(g_plane + _tile_offsets(wy, wx, sg_h, sg_w), mask=ok, other=0.0)
            arg = tl.load(a_plane + _tile_offsets(wy, wx, sa_h, sa_w), mask=ok, other=0)
            arg = arg.to(tl.int32)
            tap_y = _tap_at(2 * wy[:, None] + arg // 2 - p[:, None] + 2)
            tap_x = _tap_at(2 * wx[None, :] + arg % 2 - q[None, :] + 2)
            acc += (tap_y * tap_x).to(ACC_DTYPE) * g.to(ACC_DTYPE)
    mask = (p < H)[:, None] & (q < W)[None, :]
    acc = _apply_epilogue(acc, base_ptr + _plane_offset(plane, C, sb_n, sb_c),
                          _tile_offsets(p, q, sb_h, sb_w), mask, EPILOGUE)
    out = out_ptr + _plane_offset(plane, C, so_n, so_c) + _tile_offsets(p, q, so_h, so_w)
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- launchers


def _taps_hit(start: torch.Tensor, target: torch.Tensor, position) -> torch.Tensor:
    """``sum_t taps[t] * [position(start + t) == target]``: how much of ``target`` the blur centred
    at ``start + 2`` reads, once each tap's position is mapped by ``position``."""
    total = torch.zeros(start.shape, dtype=torch.float64)
    for t, tap in enumerate(BINOMIAL_TAPS):
        total += (tap / BINOMIAL_NORM) * (position(start + t) == target)
    return total


def _axis_weight(op: _AxisOp, o: torch.Tensor, i: torch.Tensor, n_out: int, n_in: int):
    """Entry ``M[o, i]`` of the 1-D operator ``op`` (an adjoint ``_T`` swaps the roles)."""
    if op in (_AxisOp.GAUSS_DOWN_T, _AxisOp.GAUSS_UP_T, _AxisOp.NEAREST_UP_T):
        o, i, n_out, n_in = i, o, n_in, n_out
        op = _AxisOp(op - 1)
    if op is _AxisOp.GAUSS_DOWN:  # o coarse, i fine: reflect-101 on the fine axis
        return _taps_hit(2 * o - 2, i, lambda v: reflect101_index(v, n_in))
    if op is _AxisOp.GAUSS_UP:  # o fine, i coarse: reflect-101 on the zero-inserted 2n grid
        grid = 2 * n_in
        return ZERO_INSERT_GAIN * _taps_hit(o - 2, 2 * i, lambda v: reflect101_index(v, grid))
    # NEAREST_UP, o fine, i coarse: zero padding outside the nearest-upsampled 2n grid
    def nearest_source(v: torch.Tensor) -> torch.Tensor:
        return torch.where((v >= 0) & (v < 2 * n_in), v // 2, -1)

    return _taps_hit(o - 2, i, nearest_source)


@functools.lru_cache(maxsize=256)
def _band_table(op: _AxisOp, n_out: int, n_in: int, device: torch.device) -> torch.Tensor:
    """The band of the 1-D operator ``op`` (``n_in -> n_out``): ``[n_out, BAND]`` float32, entry
    ``(o, t)`` the weight of input ``first(o) + t``. Built once per size and device (the entries
    are dyadic, exact in float32)."""
    band, coarse_out = _BAND[op]
    o = torch.arange(n_out)[:, None]
    i = (2 * o - 2 if coarse_out else o // 2 - 1) + torch.arange(band)[None, :]
    weight = _axis_weight(op, o.expand_as(i), i, n_out, n_in)
    weight = torch.where((i >= 0) & (i < n_in), weight, 0.0)
    return weight.to(device=device, dtype=torch.float32).contiguous()


def _acc_dtype(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if dtype == torch.float64 else tl.float32


def _block_h(dtype: torch.dtype) -> int:
    """Tile height: halved for float64, whose wider band and window loads spill on sm_90
    at the full height (``python -m flowkit.kernels.gpu_compile``)."""
    return BLOCK_H // 2 if dtype == torch.float64 else BLOCK_H


def _grid(out: torch.Tensor, block_h: int) -> tuple[int, int, int]:
    n, c, height, width = out.shape
    return n * c, triton.cdiv(height, block_h), triton.cdiv(width, BLOCK_W)


def _launch_separable(
    x: torch.Tensor,
    op: _AxisOp,
    size: tuple[int, int],
    base: torch.Tensor | None = None,
    epilogue: _Epilogue = _Epilogue.NONE,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``[base +/-] M_h @ x @ M_w^T`` with output ``size``; ``base`` has the output's shape."""
    if (base is None) != (epilogue is _Epilogue.NONE):
        raise RuntimeError(f"epilogue {epilogue.name} needs a base tensor exactly when not NONE")
    like = x if base is None else base
    out = empty_map(like, *size, dtype=out_dtype or like.dtype)
    if out.numel() == 0:
        return out
    base_strides = out.stride() if base is None else base.stride()
    band, coarse_out = _BAND[op]
    table_h = _band_table(op, size[0], x.shape[2], x.device)
    table_w = _band_table(op, size[1], x.shape[3], x.device)
    block_h = _block_h(x.dtype)
    _separable_kernel[_grid(out, block_h)](
        x, table_h, table_w, out if base is None else base, out,
        x.shape[1], x.shape[2], x.shape[3], size[0], size[1],
        *x.stride(), *base_strides, *out.stride(),
        BAND=band, COARSE_OUT=coarse_out, EPILOGUE=int(epilogue),
        ACC_DTYPE=_acc_dtype(x.dtype), BLOCK_H=block_h, BLOCK_W=BLOCK_W, num_warps=NUM_WARPS,
    )
    return out


def _launch_maxpool_down(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = x.shape[2] // 2, x.shape[3] // 2
    out = empty_map(x, h, w)
    argmax = empty_map(x, h, w, dtype=ARGMAX_DTYPE)
    if out.numel() == 0:
        return out, argmax
    block_h = _block_h(x.dtype)
    _maxpool_down_fwd_kernel[_grid(out, block_h)](
        x, out, argmax, x.shape[1], x.shape[2], x.shape[3], h, w,
        *x.stride(), *out.stride(), *argmax.stride(),
        ACC_DTYPE=_acc_dtype(x.dtype), BLOCK_H=block_h, BLOCK_W=BLOCK_W, num_warps=NUM_WARPS,
    )
    return out, argmax


def _launch_maxpool_down_backward(
    grad: torch.Tensor,
    argmax: torch.Tensor,
    size: tuple[int, int],
    base: torch.Tensor | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    like = grad if base is None else base
    out = empty_map(like, *size, dtype=out_dtype or like.dtype)
    if out.numel() == 0:
        return out
    epilogue = _Epilogue.NONE if base is None else _Epilogue.ADD
    block_h = _block_h(grad.dtype)
    _maxpool_down_bwd_kernel[_grid(out, block_h)](
        grad, argmax, out if base is None else base, out,
        grad.shape[1], size[0], size[1], grad.shape[2], grad.shape[3],
        *grad.stride(), *argmax.stride(), *(out if base is None else base).stride(),
        *out.stride(),
        EPILOGUE=int(epilogue), ACC_DTYPE=_acc_dtype(grad.dtype),
        BLOCK_H=block_h, BLOCK_W=BLOCK_W, num_warps=NUM_WARPS,
    )
    return out


def _up_op(mode: PyramidMode) -> _AxisOp:
    return _AxisOp.NEAREST_UP if mode is PyramidMode.PYRAMIDFLOW else _AxisOp.GAUSS_UP


def _up_adjoint_op(mode: PyramidMode) -> _AxisOp:
    return _AxisOp.NEAREST_UP_T if mode is PyramidMode.PYRAMIDFLOW else _AxisOp.GAUSS_UP_T


def _work_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def pyr_down_triton(x: torch.Tensor, mode: PyramidMode | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Triton ``pyr_down``: ``(down, argmax)``; ``argmax`` is empty in gaussian mode."""
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    size = pyr_down_size(x.shape[2], x.shape[3], mode)
    if mode is PyramidMode.PYRAMIDFLOW:
        return _launch_maxpool_down(x)
    down = _launch_separable(x, _AxisOp.GAUSS_DOWN, size)
    return down, empty_argmax(x)


def pyr_down_backward_triton(
    grad: torch.Tensor,
    argmax: torch.Tensor,
    size: tuple[int, int],
    mode: PyramidMode | str,
    base: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triton ``[base +] down^T(grad)`` onto an ``size = (H, W)`` map."""
    mode = PyramidMode(mode)
    if mode is PyramidMode.PYRAMIDFLOW:
        return _launch_maxpool_down_backward(grad, argmax, size, base)
    epilogue = _Epilogue.NONE if base is None else _Epilogue.ADD
    return _launch_separable(grad, _AxisOp.GAUSS_DOWN_T, size, base, epilogue)


def pyr_up_triton(x: torch.Tensor, size: tuple[int, int], mode: PyramidMode | str) -> torch.Tensor:
    """Triton ``pyr_up`` of ``x`` to ``size = (H, W)``."""
    mode = PyramidMode(mode)
    check_pyramid_input(x)
    size = (size[0], size[1])
    check_up_size((x.shape[2], x.shape[3]), size, mode)
    return _launch_separable(x, _up_op(mode), size)


def pyr_up_backward_triton(
    grad: torch.Tensor, coarse: tuple[int, int], mode: PyramidMode | str
) -> torch.Tensor:
    """Triton ``up^T(grad)`` onto the ``coarse = (h, w)`` map."""
    return _launch_separable(grad, _up_adjoint_op(PyramidMode(mode)), coarse)


def pyr_level_triton(
    x: torch.Tensor, mode: PyramidMode | str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Triton ``pyr_level``: ``(x - up(down), down, argmax)`` in two kernels, no temporaries."""
    mode = PyramidMode(mode)
    down, argmax = pyr_down_triton(x, mode)
    residual = _launch_separable(down, _up_op(mode), (x.shape[2], x.shape[3]), base=x,
                                 epilogue=_Epilogue.SUBTRACT_FROM)
    return residual, down, argmax


def pyr_level_backward_triton(
    grad_residual: torch.Tensor,
    grad_down: torch.Tensor,
    argmax: torch.Tensor,
    mode: PyramidMode | str,
) -> torch.Tensor:
    """Triton gradient of ``pyr_level``: ``g_r + down^T(g_d - up^T(g_r))``, the coarse middle
    term kept in float32 (float64 for float64)."""
    mode = PyramidMode(mode)
    size = (grad_residual.shape[2], grad_residual.shape[3])
    coarse = (grad_down.shape[2], grad_down.shape[3])
    through_down = _launch_separable(
        grad_residual, _up_adjoint_op(mode), coarse, base=grad_down,
        epilogue=_Epilogue.SUBTRACT_FROM, out_dtype=_work_dtype(grad_residual.dtype))
    return pyr_down_backward_triton(through_down, argmax, size, mode, base=grad_residual)


def pyr_level_inverse_triton(
    residual: torch.Tensor, down: torch.Tensor, mode: PyramidMode | str
) -> torch.Tensor:
    """Triton ``pyr_level_inverse``: ``residual + up(down)`` in one kernel."""
    mode = PyramidMode(mode)
    check_pyramid_input(residual, "residual")
    check_pyramid_input(down, "down")
    size = (residual.shape[2], residual.shape[3])
    check_up_size((down.shape[2], down.shape[3]), size, mode)
    return _launch_separable(down, _up_op(mode), size, base=residual, epilogue=_Epilogue.ADD)
