"""Triton kernels and launchers of :func:`large_kernel_conv2d` (needs Triton).

Activations are NHWC (channels-last); one program computes a run of ``BLOCK_M`` output pixels of
one image row for ``BLOCK_N`` output channels, and for each kernel row ``kh`` the ``kw`` taps are
folded into the reduction, so ``tl.dot`` multiplies an ``[BLOCK_M, KW * C_in]`` tile by
``[KW * C_in, C_out]``. In NHWC the operand tile of a pixel run is a sliding window over one
contiguous input row: element ``(m, k)`` with ``k = kw * C_in + ci`` sits at
``row + (w0 + m - pad) * C_in + k``.

* forward: ``y = act(conv(x, W) + b)``, fp32 accumulation, bias and activation in the epilogue;
* input gradient: the same kernel applied to ``dz = dy * act'(y)`` with the flipped, transposed
  weight (a stride-1 "same" convolution's adjoint is again one);
* weight and bias gradient: per kernel row, ``dW[kh] = sum_pixels window^T @ dz``, split over
  pixel tiles into float32 partials that are summed afterwards (deterministic, no atomics).

Tiles come from :data:`FWD_CONFIGS` and :data:`WGRAD_CONFIGS`, one per arithmetic and output
channel class, sized so that every config compiles for sm_80 and sm_90 without register spills
(``python -m flowkit.kernels.gpu_compile`` checks; the kernel size, padding, bias and activation
are runtime arguments, so they add no configurations). Grids: forward ``(B * H, W tiles, C_out
tiles)``; weight gradient ``(pixel-tile splits, KH x reduction chunks, C_out tiles)``.
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .conv import (
    Activation,
    activation_code,
    activation_grad,
    adjoint_weight,
    check_conv_args,
    conv_precision,
    conv_supported,
    describe_conv_support,
)

__all__ = [
    "FWD_CONFIGS",
    "MAX_BLOCK_N",
    "WGRAD_CONFIGS",
    "TileConfig",
    "large_kernel_conv2d_backward_triton",
    "large_kernel_conv2d_triton",
    "large_kernel_conv2d_weight_grad_triton",
]


class TileConfig(NamedTuple):
    """Block sizes and launch options of one kernel configuration."""

    block_m: int
    block_k: int
    num_warps: int
    num_stages: int


# (dot arithmetic, BLOCK_N) -> tile, chosen with ``python -m flowkit.kernels.gpu_compile``: no
# spills on sm_80/sm_90 and <= ~200 registers. ``ieee`` float32 dots run on FMA units with both
# operand tiles in registers, so their tiles are the smallest and BLOCK_N stops at 32 (more
# output channels take a second program along the grid's third axis); the tensor-core paths
# (``tf32``, ``half`` = bfloat16/float16) keep 64 pixels x up to 64 channels.
FWD_CONFIGS: dict[tuple[str, int], TileConfig] = {
    ("ieee", 16): TileConfig(32, 16, 4, 2),
    ("ieee", 32): TileConfig(32, 16, 4, 2),
    ("tf32", 16): TileConfig(64, 16, 4, 3),
    ("tf32", 32): TileConfig(64, 16, 4, 3),
    ("tf32", 64): TileConfig(64, 32, 8, 3),
    ("half", 16): TileConfig(64, 64, 4, 3),
    ("half", 32): TileConfig(64, 64, 4, 3),
    ("half", 64): TileConfig(64, 64, 8, 3),
}
"""Forward (and input-gradient) tiles: ``block_m`` pixels of a row x ``BLOCK_N`` channels."""

WGRAD_CONFIGS: dict[tuple[str, int], TileConfig] = {
    ("ieee", 16): TileConfig(32, 16, 4, 2),
    ("ieee", 32): TileConfig(32, 16, 4, 2),
    ("tf32", 16): TileConfig(32, 16, 4, 2),
    ("tf32", 32): TileConfig(32, 16, 4, 2),
    ("tf32", 64): TileConfig(32, 16, 4, 2),
    ("half", 16): TileConfig(32, 64, 4, 2),
    ("half", 32): TileConfig(32, 64, 4, 2),
    ("half", 64): TileConfig(32, 64, 4, 2),
}
"""Weight-gradient tiles: ``block_m`` pixels reduced per step, ``block_k`` rows of ``dW``."""

MAX_BLOCK_N = {"ieee": 32, "tf32": 64, "half": 64}
"""Output channels per program, at most."""


def _interpreted() -> bool:
    """Whether Triton runs in its CPU interpreter, where ``tl.dot`` on bf16 is wrong."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ----------------------------------------------------------------------------------------------
# Triton kernels
# ----------------------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, acc, DOT_FP32: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """``acc + a @ b`` with fp32 accumulation; operands upcast first where ``DOT_FP32``."""
    if DOT_FP32:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION)


@triton.jit
def _conv_fwd_kernel(
    x_ptr,  # [B, H, W, C_IN] contiguous
    w_ptr,  # [KH, K_TOTAL, C_OUT] contiguous, K_TOTAL = KW * C_IN
    b_ptr,  # [C_OUT] or a dummy
    y_ptr,  # [B, H, W, C_OUT] contiguous
    H,
    W,
    C_IN,
    C_OUT,
    K_TOTAL,
    KH,
    pad_h,
    pad_w,
    has_bias,
    activation,  # 0 none, 1 relu, 2 leaky relu
    negative_slope,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # b * H + h
    w0 = tl.program_id(1) * BLOCK_M
    n0 = tl.program_id(2) * BLOCK_N
    h = row % H
    offs_m = w0 + tl.arange(0, BLOCK_M)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_ok = offs_n < C_OUT
    row_len = W * C_IN
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KH):
        hh = h + kh - pad_h
        # 0 when the input row is padding: a scalar `&` a tensor breaks the interpreter's masks
        row_end = tl.where((hh >= 0) & (hh < H), row_len, 0)
        x_row = x_ptr + (row + kh - pad_h) * row_len
        for k0 in range(0, K_TOTAL, BLOCK_K):
            k = k0 + offs_k
            k_ok = k < K_TOTAL
            pos = (offs_m[:, None] - pad_w) * C_IN + k[None, :]
            a_mask = k_ok[None, :] & (pos >= 0) & (pos < row_end)
            a = tl.load(x_row + pos, mask=a_mask, other=0.0)
            w_off = (kh * K_TOTAL + k[:, None]) * C_OUT + offs_n[None, :]
            b = tl.load(w_ptr + w_off, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _dot(a, b, acc, DOT_FP32, INPUT_PRECISION)
    bias_end = tl.where(has_bias != 0, C_OUT, 0)
    acc += tl.load(b_ptr + offs_n, mask=offs_n < bias_end, other=0.0).to(tl.float32)[None, :]
    if activation == 1:
        acc = tl.maximum(acc, 0.0)
    elif activation == 2:
        acc = tl.where(acc > 0.0, acc, acc * negative_slope)
    y_off = (row * W + offs_m[:, None]) * C_OUT + offs_n[None, :]
    y_mask = (offs_m[:, None] < W) & n_ok[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _conv_wgrad_kernel(
    x_ptr,  # [B, H, W, C_IN] contiguous
    dz_ptr,  # [B, H, W, C_OUT] contiguous
    dw_ptr,  # [NUM_SPLITS, KH, K_TOTAL, C_OUT] float32 partials
    db_ptr,  # [NUM_SPLITS, C_OUT] float32 partials
    H,
    W,
    C_IN,
    C_OUT,
    K_TOTAL,
    KH,
    pad_h,
    pad_w,
    num_kc,
    num_tiles,
    tiles_per_row,
    num_splits,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    split = tl.program_id(0)
    kk = tl.program_id(1)
    n0 = tl.program_id(2) * BLOCK_N
    kh = kk // num_kc
    k = (kk % num_kc) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = n0 + tl.arange(0, BLOCK_N)
    k_ok = k < K_TOTAL
    n_ok = offs_n < C_OUT
    row_len = W * C_IN
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t in range(split, num_tiles, num_splits):
        row = (t // tiles_per_row).to(tl.int64)
        w = (t % tiles_per_row) * BLOCK_M + offs_m
        hh = row % H + kh - pad_h
        row_end = tl.where((hh >= 0) & (hh < H), row_len, 0)
        pos = (w[None, :] - pad_w) * C_IN + k[:, None]
        xt_mask = k_ok[:, None] & (pos >= 0) & (pos < row_end)
        xt = tl.load(x_ptr + (row + kh - pad_h) * row_len + pos, mask=xt_mask, other=0.0)
        dz_off = (row * W + w[:, None]) * C_OUT + offs_n[None, :]
        dz = tl.load(dz_ptr + dz_off, mask=(w[:, None] < W) & n_ok[None, :], other=0.0)
        acc = _dot(xt, dz, acc, DOT_FP32, INPUT_PRECISION)
        db += tl.sum(dz.to(tl.float32), axis=0)
    out = dw_ptr + ((split.to(tl.int64) * KH + kh) * K_TOTAL) * C_OUT
    tl.store(out + k[:, None] * C_OUT + offs_n[None, :], acc, mask=k_ok[:, None] & n_ok[None, :])
    # the bias gradient once per split: by the programs of the first reduction chunk
    tl.store(db_ptr + split * C_OUT + offs_n, db, mask=offs_n < tl.where(kk == 0, C_OUT, 0))


# ----------------------------------------------------------------------------------------------
# Launchers: own the layout (NHWC), allocation, tiles and grid
# ----------------------------------------------------------------------------------------------


def _dot_kind(dtype: torch.dtype) -> str:
    """``ieee`` (float32 without TF32), ``tf32`` or ``half`` (bfloat16/float16 operands)."""
    precision = conv_precision(dtype)
    return {"float32": "ieee", "tf32": "tf32"}.get(precision, "half")


def _dot_options(dtype: torch.dtype) -> dict[str, object]:
    """``DOT_FP32`` and ``INPUT_PRECISION`` constexprs for operands of ``dtype``.

    Half types keep Triton's default (``tf32``, which only affects float32 operands). The
    interpreter computes every dot in float32.
    """
    ieee = _dot_kind(dtype) == "ieee"
    return {"DOT_FP32": _interpreted(), "INPUT_PRECISION": "ieee" if ieee else "tf32"}


def _block_n(c_out: int, kind: str) -> int:
    """Output channels per program: 16, 32 or 64 (``tl.dot`` needs >= 16)."""
    return max(16, min(MAX_BLOCK_N[kind], triton.next_power_of_2(c_out)))


@functools.cache
def _num_sms(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device; a small number for the CPU interpreter."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2


def _nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` [B, C, H, W] with channels-last memory (a no-op when it already is)."""
    return t.contiguous(memory_format=torch.channels_last)


def _folded_weight(weight: torch.Tensor) -> torch.Tensor:
    """``[C_out, C_in, KH, KW]`` -> ``[KH, KW * C_in, C_out]``: the kw taps join the reduction."""
    c_out, c_in, kh, kw = weight.shape
    return weight.permute(2, 3, 1, 0).reshape(kh, kw * c_in, c_out).contiguous()


def large_kernel_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Forward Triton launch of :func:`~flowkit.kernels.conv.large_kernel_conv2d` (no autograd,
    no dispatch).

    Args:
        x: input ``[B, C_in, H, W]``, any memory format (copied to channels-last if needed).
        weight: ``[C_out, C_in, KH, KW]``.
        bias: ``[C_out]`` or ``None``.
        activation: the fused epilogue activation.
        negative_slope: LeakyReLU slope, ``>= 0``.

    Returns:
        ``[B, C_out, H, W]`` in channels-last memory, dtype of ``x``.

    Raises:
        ValueError: for arguments the kernels do not support (see ``conv_supported``).
    """
    act = check_conv_args(x, weight, bias, activation)
    if not conv_supported(x, weight, act, negative_slope):
        raise ValueError(describe_conv_support(x, weight, negative_slope))
    batch, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    y = torch.empty((batch, c_out, height, width), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    kind = _dot_kind(x.dtype)
    block_n = _block_n(c_out, kind)
    tile = FWD_CONFIGS[(kind, block_n)]
    grid = (batch * height, triton.cdiv(width, tile.block_m), triton.cdiv(c_out, block_n))
    _conv_fwd_kernel[grid](
        _nhwc(x), _folded_weight(weight), weight if bias is None else bias.contiguous(), y,
        height, width, c_in, c_out, kw * c_in, kh, kh // 2, kw // 2, int(bias is not None),
        activation_code(act), float(negative_slope),
        BLOCK_M=tile.block_m, BLOCK_N=block_n, BLOCK_K=tile.block_k,
        num_warps=tile.num_warps, num_stages=tile.num_stages, **_dot_options(x.dtype),
    )
    return y


def large_kernel_conv2d_weight_grad_triton(
    grad_z: torch.Tensor, x: torch.Tensor, kernel_size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias gradients of a "same" convolution by Triton.

    ``dW[co, ci, kh, kw] = sum_{b,h,w} dz[b, co, h, w] * x[b, ci, h + kh - KH//2, w + kw - KW//2]``
    and ``db[co] = sum_{b,h,w} dz[b, co, h, w]``, accumulated in float32.

    Args:
        grad_z: gradient wrt the pre-activation output, ``[B, C_out, H, W]``.
        x: the convolution's input, ``[B, C_in, H, W]``.
        kernel_size: ``(KH, KW)``.

    Returns:
        ``(dW [C_out, C_in, KH, KW], db [C_out])`` in the dtype of ``x``.
    """
    batch, c_in, height, width = x.shape
    c_out = grad_z.shape[1]
    kh, kw = kernel_size
    k_total = kw * c_in
    kind = _dot_kind(x.dtype)
    block_n = _block_n(c_out, kind)
    tile = WGRAD_CONFIGS[(kind, block_n)]
    num_kc = triton.cdiv(k_total, tile.block_k)
    num_nc = triton.cdiv(c_out, block_n)
    tiles_per_row = triton.cdiv(width, tile.block_m)
    num_tiles = batch * height * tiles_per_row
    num_splits = max(1, min(num_tiles, 4 * _num_sms(x.device) // (kh * num_kc * num_nc)))
    dw = torch.empty((num_splits, kh, k_total, c_out), device=x.device, dtype=torch.float32)
    db = torch.empty((num_splits, c_out), device=x.device, dtype=torch.float32)
    _conv_wgrad_kernel[(num_splits, kh * num_kc, num_nc)](
        _nhwc(x), _nhwc(grad_z), dw, db,
        height, width, c_in, c_out, k_total, kh, kh // 2, kw // 2, num_kc,
        num_tiles, tiles_per_row, num_splits,
        BLOCK_M=tile.block_m, BLOCK_N=block_n, BLOCK_K=tile.block_k,
        num_warps=tile.num_warps, num_stages=tile.num_stages, **_dot_options(x.dtype),
    )
    weight_grad = dw.sum(0).reshape(kh, kw, c_in, c_out).permute(3, 2, 0, 1)
    return weight_grad.to(x.dtype).contiguous(), db.sum(0).to(x.dtype)


def large_kernel_conv2d_backward_triton(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    out: torch.Tensor,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All gradients of :func:`large_kernel_conv2d_triton` by Triton.

    Args:
        grad_out: gradient wrt the output, ``[B, C_out, H, W]``.
        x: the input, ``[B, C_in, H, W]``.
        weight: ``[C_out, C_in, KH, KW]``.
        out: the forward output (the activation's derivative is read from it).
        activation: the fused activation of the forward.
        negative_slope: its LeakyReLU slope.

    Returns:
        ``(dx [B, C_in, H, W], dW [C_out, C_in, KH, KW], db [C_out])``.
    """
    grad_z = activation_grad(grad_out, out, Activation(activation), negative_slope)
    grad_x = large_kernel_conv2d_triton(grad_z, adjoint_weight(weight))
    grad_w, grad_b = large_kernel_conv2d_weight_grad_triton(grad_z, x, tuple(weight.shape[2:]))
    return grad_x, grad_w, grad_b
