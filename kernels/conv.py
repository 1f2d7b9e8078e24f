"""Large-kernel "same" 2-D convolution (3x3 .. 11x11, 4..64 channels) with a fused activation.

The coupling subnets of PyramidFlow-like flows are 7x7 convolutions with few channels at high
resolution. The Triton kernels here specialise for that case: activations are NHWC
(channels-last), one program computes a run of ``BLOCK_M`` output pixels of one image row for all
output channels, and for each kernel row ``kh`` the ``kw`` taps are folded into the reduction, so
``tl.dot`` multiplies an ``[BLOCK_M, KW * C_in]`` tile by ``[KW * C_in, C_out]``. In NHWC the
operand tile of a pixel run is a sliding window over one contiguous input row: element ``(m, k)``
with ``k = kw * C_in + ci`` sits at ``row + (w0 + m - pad) * C_in + k``.

* forward: ``y = act(conv(x, W) + b)``, fp32 accumulation, bias and activation in the epilogue;
* input gradient: the same kernel applied to ``dz = dy * act'(y)`` with the flipped, transposed
  weight (a stride-1 "same" convolution's adjoint is again one);
* weight and bias gradient: per kernel row, ``dW[kh] = sum_pixels window^T @ dz``, split over
  pixel tiles into float32 partials that are summed afterwards (deterministic, no atomics).

:func:`large_kernel_conv2d` takes the Triton path only for CUDA tensors of a supported shape and
only where the measured table in :mod:`flowkit.kernels.conv_table` says it beat cuDNN (empty until
someone measures with ``benchmarks/conv.py``); ``FLOWKIT_CONV_KERNEL=force`` overrides the table.
Everything else goes to :func:`large_kernel_conv2d_reference` (``F.conv2d``).
"""

from __future__ import annotations

import functools
import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from .choice import Choice
from .conv_table import CONV_DISPATCH_TABLE
from .dispatch import use_triton

__all__ = [
    "Activation",
    "CONV_KERNEL_ENV_VAR",
    "ConvBackend",
    "ConvMode",
    "conv_backend",
    "conv_precision",
    "conv_supported",
    "large_kernel_conv2d",
    "large_kernel_conv2d_backward_triton",
    "large_kernel_conv2d_reference",
    "large_kernel_conv2d_triton",
    "large_kernel_conv2d_weight_grad_triton",
]

CONV_KERNEL_ENV_VAR = "FLOWKIT_CONV_KERNEL"
"""``auto`` (default: the measured table decides) or ``force`` (Triton wherever supported)."""

KERNEL_SIZES = range(3, 12, 2)
CHANNELS = range(4, 65)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Activation(Choice):
    """The activation fused into the convolution's epilogue."""

    NONE = "none"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"


class ConvMode(Choice):
    """Values of ``FLOWKIT_CONV_KERNEL``."""

    AUTO = "auto"
    FORCE = "force"


class ConvBackend(Choice):
    """Which implementation :func:`large_kernel_conv2d` runs."""

    REFERENCE = "reference"
    TRITON = "triton"


_ACTIVATION_CODE = {Activation.NONE: 0, Activation.RELU: 1, Activation.LEAKY_RELU: 2}


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
    negative_slope,
    KH: tl.constexpr,
    PAD_H: tl.constexpr,
    PAD_W: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # b * H + h
    w0 = tl.program_id(1) * BLOCK_M
    h = row % H
    offs_m = w0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    n_ok = offs_n < C_OUT
    row_len = W * C_IN
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KH):
        hh = h + kh - PAD_H
        # 0 when the input row is padding: a scalar `&` a tensor breaks the interpreter's masks
        row_end = tl.where((hh >= 0) & (hh < H), row_len, 0)
        x_row = x_ptr + (row + kh - PAD_H) * row_len
        for k0 in range(0, K_TOTAL, BLOCK_K):
            k = k0 + offs_k
            k_ok = k < K_TOTAL
            pos = (offs_m[:, None] - PAD_W) * C_IN + k[None, :]
            a_mask = k_ok[None, :] & (pos >= 0) & (pos < row_end)
            a = tl.load(x_row + pos, mask=a_mask, other=0.0)
            w_off = (kh * K_TOTAL + k[:, None]) * C_OUT + offs_n[None, :]
            b = tl.load(w_ptr + w_off, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            acc = _dot(a, b, acc, DOT_FP32, INPUT_PRECISION)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if ACTIVATION == 1:
        acc = tl.maximum(acc, 0.0)
    elif ACTIVATION == 2:
        acc = tl.where(acc > 0.0, acc, acc * negative_slope)
    y_off = (row * W + offs_m[:, None]) * C_OUT + offs_n[None, :]
    y_mask = (offs_m[:, None] < W) & n_ok[None, :]
    tl.store(y_ptr + y_off, acc.to(y_ptr.dtype.element_ty), mask=y_mask)


@triton.jit
def _conv_wgrad_kernel(
    x_ptr,  # [B, H, W, C_IN] contiguous
    dz_ptr,  # [B, H, W, C_OUT] contiguous
    dw_ptr,  # [NUM_SPLITS, KH, K_TOTAL, C_OUT] float32 partials
    db_ptr,  # [NUM_SPLITS, C_OUT] float32 partials or a dummy
    H,
    W,
    C_IN,
    C_OUT,
    K_TOTAL,
    num_tiles,
    tiles_per_row,
    num_splits,
    KH: tl.constexpr,
    PAD_H: tl.constexpr,
    PAD_W: tl.constexpr,
    NUM_KC: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_FP32: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
):
    split = tl.program_id(0)
    kk = tl.program_id(1)
    kh = kk // NUM_KC
    k = (kk % NUM_KC) * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    k_ok = k < K_TOTAL
    n_ok = offs_n < C_OUT
    row_len = W * C_IN
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    db = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for t in range(split, num_tiles, num_splits):
        row = (t // tiles_per_row).to(tl.int64)
        w = (t % tiles_per_row) * BLOCK_M + offs_m
        hh = row % H + kh - PAD_H
        row_end = tl.where((hh >= 0) & (hh < H), row_len, 0)
        pos = (w[None, :] - PAD_W) * C_IN + k[:, None]
        xt_mask = k_ok[:, None] & (pos >= 0) & (pos < row_end)
        xt = tl.load(x_ptr + (row + kh - PAD_H) * row_len + pos, mask=xt_mask, other=0.0)
        dz_off = (row * W + w[:, None]) * C_OUT + offs_n[None, :]
        dz = tl.load(dz_ptr + dz_off, mask=(w[:, None] < W) & n_ok[None, :], other=0.0)
        acc = _dot(xt, dz, acc, DOT_FP32, INPUT_PRECISION)
        if HAS_BIAS:
            db += tl.sum(dz.to(tl.float32), axis=0)
    out = dw_ptr + ((split.to(tl.int64) * KH + kh) * K_TOTAL) * C_OUT
    tl.store(out + k[:, None] * C_OUT + offs_n[None, :], acc, mask=k_ok[:, None] & n_ok[None, :])
    if HAS_BIAS:
        tl.store(db_ptr + split * C_OUT + offs_n, db, mask=offs_n < tl.where(kk == 0, C_OUT, 0))


# ----------------------------------------------------------------------------------------------
# Launchers: own the layout (NHWC), allocation, block sizes and grid
# ----------------------------------------------------------------------------------------------


def conv_precision(dtype: torch.dtype) -> str:
    """The arithmetic of a convolution in ``dtype``: its name, or ``tf32`` for float32 when
    ``torch.backends.cudnn.allow_tf32`` lets convolutions use TF32 (as ``F.conv2d`` does)."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return str(dtype).removeprefix("torch.")


def _dot_options(dtype: torch.dtype) -> dict[str, object]:
    """``DOT_FP32`` and ``INPUT_PRECISION`` constexprs for operands of ``dtype``.

    ``ieee`` only for float32 without TF32; half types keep Triton's default (``tf32``, which
    only affects float32 operands). The interpreter computes every dot in float32.
    """
    ieee = conv_precision(dtype) == "float32"
    return {"DOT_FP32": _interpreted(), "INPUT_PRECISION": "ieee" if ieee else "tf32"}


def _block(n: int, low: int, high: int) -> int:
    """The power of two covering ``n``, clipped to ``[low, high]`` (``tl.dot`` needs >= 16)."""
    return max(low, min(high, triton.next_power_of_2(n)))


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


def _adjoint_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight whose "same" convolution is the adjoint of ``weight``'s: flipped, transposed."""
    return weight.flip(2, 3).transpose(0, 1)


def _check_launch(x: torch.Tensor, weight: torch.Tensor, activation: Activation, slope: float):
    """Raise if the Triton kernels cannot run this convolution (callers check first)."""
    if not conv_supported(x, weight, activation, slope):
        raise ValueError(
            f"the Triton convolution supports odd kernel sizes {list(KERNEL_SIZES)}, "
            f"{CHANNELS.start}..{CHANNELS.stop - 1} channels, dtypes {SUPPORTED_DTYPES} and a "
            f"non-negative LeakyReLU slope; got x {tuple(x.shape)} {x.dtype}, weight "
            f"{tuple(weight.shape)}, slope {slope}; use large_kernel_conv2d, which falls back"
        )


def large_kernel_conv2d_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Forward Triton launch of :func:`large_kernel_conv2d` (no autograd, no dispatch).

    Args:
        x: input ``[B, C_in, H, W]``, any memory format (copied to channels-last if needed).
        weight: ``[C_out, C_in, KH, KW]``.
        bias: ``[C_out]`` or ``None``.
        activation: the fused epilogue activation.
        negative_slope: LeakyReLU slope, ``>= 0``.

    Returns:
        ``[B, C_out, H, W]`` in channels-last memory, dtype of ``x``.
    """
    act = _check_conv_args(x, weight, bias, activation)
    _check_launch(x, weight, act, negative_slope)
    batch, c_in, height, width = x.shape
    c_out, _, kh, kw = weight.shape
    x_nhwc = _nhwc(x)
    y = torch.empty((batch, c_out, height, width), device=x.device, dtype=x.dtype,
                    memory_format=torch.channels_last)
    k_total = kw * c_in
    block_m = _block(width, 16, 128)
    block_n = _block(c_out, 16, 64)
    grid = (batch * height, triton.cdiv(width, block_m))
    _conv_fwd_kernel[grid](
        x_nhwc, _folded_weight(weight), weight if bias is None else bias.contiguous(), y,
        height, width, c_in, c_out, k_total, float(negative_slope),
        KH=kh, PAD_H=kh // 2, PAD_W=kw // 2, HAS_BIAS=bias is not None,
        ACTIVATION=_ACTIVATION_CODE[act], BLOCK_M=block_m, BLOCK_N=block_n,
        BLOCK_K=_block(k_total, 16, 64), num_warps=4 if block_m * block_n <= 4096 else 8,
        **_dot_options(x.dtype),
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
    block_m = _block(width, 16, 64)
    block_n = _block(c_out, 16, 64)
    block_k = _block(k_total, 16, 64)
    num_kc = triton.cdiv(k_total, block_k)
    tiles_per_row = triton.cdiv(width, block_m)
    num_tiles = batch * height * tiles_per_row
    num_splits = max(1, min(num_tiles, 4 * _num_sms(x.device) // (kh * num_kc)))
    dw = torch.empty((num_splits, kh, k_total, c_out), device=x.device, dtype=torch.float32)
    db = torch.zeros((num_splits, c_out), device=x.device, dtype=torch.float32)
    _conv_wgrad_kernel[(num_splits, kh * num_kc)](
        _nhwc(x), _nhwc(grad_z), dw, db,
        height, width, c_in, c_out, k_total, num_tiles, tiles_per_row, num_splits,
        KH=kh, PAD_H=kh // 2, PAD_W=kw // 2, NUM_KC=num_kc, HAS_BIAS=True,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4,
        **_dot_options(x.dtype),
    )
    weight_grad = dw.sum(0).reshape(kh, kw, c_in, c_out).permute(3, 2, 0, 1)
    return weight_grad.to(x.dtype).contiguous(), db.sum(0).to(x.dtype)


def _activation_grad(
    grad_out: torch.Tensor, out: torch.Tensor, activation: Activation, negative_slope: float
) -> torch.Tensor:
    """``dz = dy * act'(z)``, read from the output: ``z > 0`` iff ``y > 0`` when slope >= 0."""
    if activation is Activation.NONE:
        return grad_out
    slope = negative_slope if activation is Activation.LEAKY_RELU else 0.0
    return torch.where(out > 0, grad_out, grad_out * slope)


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
    act = Activation(activation)
    grad_z = _activation_grad(grad_out, out, act, negative_slope)
    grad_x = large_kernel_conv2d_triton(grad_z, _adjoint_weight(weight))
    grad_w, grad_b = large_kernel_conv2d_weight_grad_triton(grad_z, x, tuple(weight.shape[2:]))
    return grad_x, grad_w, grad_b


# ----------------------------------------------------------------------------------------------
# Reference, validation, custom ops
# ----------------------------------------------------------------------------------------------


def large_kernel_conv2d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Plain-PyTorch semantics of :func:`large_kernel_conv2d`: ``F.conv2d`` then the activation."""
    act = _check_conv_args(x, weight, bias, activation)
    z = F.conv2d(x, weight, bias, padding="same")
    if act is Activation.RELU:
        return F.relu(z)
    if act is Activation.LEAKY_RELU:
        return F.leaky_relu(z, negative_slope)
    return z


def _check_conv_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: Activation | str,
) -> Activation:
    """Validate the arguments of a convolution; return the activation as an enum."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if not (isinstance(t, torch.Tensor) or (name == "bias" and t is None)):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(
            f"expected x [B, C_in, H, W] and weight [C_out, C_in, KH, KW], got x "
            f"{tuple(x.shape)} and weight {tuple(weight.shape)}; add a batch dimension to x"
        )
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"x has {x.shape[1]} channels but weight expects {weight.shape[1]} "
            f"(weight shape {tuple(weight.shape)}); groups are not supported"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"bias must have shape ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise ValueError(
                f"{name} is {t.dtype} on {t.device} but x is {x.dtype} on {x.device}; "
                f"convert it with .to(x)"
            )
    return Activation(activation)


def conv_supported(
    x: torch.Tensor,
    weight: torch.Tensor,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> bool:
    """Whether the Triton kernels implement this convolution (else ``F.conv2d`` is used)."""
    c_out, c_in, kh, kw = weight.shape
    return (
        kh in KERNEL_SIZES
        and kw in KERNEL_SIZES
        and c_in in CHANNELS
        and c_out in CHANNELS
        and x.dtype in SUPPORTED_DTYPES
        and (Activation(activation) is not Activation.LEAKY_RELU or negative_slope >= 0)
    )


@torch.library.custom_op("flowkit::large_kernel_conv2d", mutates_args=())
def _conv_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str,
    negative_slope: float,
) -> torch.Tensor:
    return large_kernel_conv2d_triton(x, weight, bias, activation, negative_slope)


@_conv_op.register_fake
def _conv_op_fake(x, weight, bias, activation, negative_slope):
    return torch.empty((x.shape[0], weight.shape[0], *x.shape[2:]), device=x.device,
                       dtype=x.dtype, memory_format=torch.channels_last)


@torch.library.custom_op("flowkit::large_kernel_conv2d_weight_grad", mutates_args=())
def _weight_grad_op(
    grad_z: torch.Tensor, x: torch.Tensor, kernel_h: int, kernel_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    return large_kernel_conv2d_weight_grad_triton(grad_z, x, (kernel_h, kernel_w))


@_weight_grad_op.register_fake
def _weight_grad_op_fake(grad_z, x, kernel_h, kernel_w):
    c_out, c_in = grad_z.shape[1], x.shape[1]
    return x.new_empty((c_out, c_in, kernel_h, kernel_w)), x.new_empty((c_out,))


def _conv_setup_context(ctx, inputs, output) -> None:
    x, weight, bias, activation, negative_slope = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.has_bias = bias is not None
    ctx.activation = Activation(activation)
    ctx.negative_slope = negative_slope


def _conv_backward(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    grad_z = _activation_grad(grad_out, out, ctx.activation, ctx.negative_slope)
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = _conv_op(grad_z, _adjoint_weight(weight), None, Activation.NONE.value, 0.0)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        grad_w, grad_b = _weight_grad_op(grad_z, x, weight.shape[2], weight.shape[3])
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


_conv_op.register_autograd(_conv_backward, setup_context=_conv_setup_context)


# ----------------------------------------------------------------------------------------------
# Dispatch and the public op
# ----------------------------------------------------------------------------------------------


def _conv_mode() -> ConvMode:
    """``FLOWKIT_CONV_KERNEL``, read on every call."""
    value = os.environ.get(CONV_KERNEL_ENV_VAR, ConvMode.AUTO.value).strip().lower()
    try:
        return ConvMode(value)
    except ValueError as error:
        raise ValueError(f"{CONV_KERNEL_ENV_VAR}: {error}") from None


@functools.cache
def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def _table_speedup(table, device: str, precision: str, c_in: int, c_out: int,
                   kernel: str, pixels: int, pass_: str) -> float:
    """The measured speed-up of the entry covering this shape; 0 where none does."""
    entries = [
        e for e in table
        if (e["device"], e["precision"], e["c_in"], e["c_out"], e["kernel"], e["pass"])
        == (device, precision, c_in, c_out, kernel, pass_) and e["pixels"] <= pixels
    ]
    return max(entries, key=lambda e: e["pixels"])["speedup"] if entries else 0.0


def conv_backend(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
    table: tuple[dict[str, object], ...] = CONV_DISPATCH_TABLE,
) -> ConvBackend:
    """Which implementation :func:`large_kernel_conv2d` runs for these arguments.

    Triton only when kernels are enabled (:func:`flowkit.kernels.use_kernels`,
    ``FLOWKIT_KERNELS``), every tensor is on CUDA, the shape is supported
    (:func:`conv_supported`) and either ``FLOWKIT_CONV_KERNEL=force`` or ``table`` holds a
    measurement on this device, precision, channels, kernel size and pass (``fwd_bwd`` when a
    gradient will be taken) at which Triton beat cuDNN. Otherwise the reference.
    """
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not use_triton(*tensors) or not conv_supported(x, weight, activation, negative_slope):
        return ConvBackend.REFERENCE
    if _conv_mode() is ConvMode.FORCE:
        return ConvBackend.TRITON
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    c_out, c_in, kh, kw = weight.shape
    speedup = _table_speedup(
        table, _device_name(x.device), conv_precision(x.dtype), c_in, c_out, f"{kh}x{kw}",
        x.shape[0] * x.shape[2] * x.shape[3], "fwd_bwd" if grad else "fwd",
    )
    return ConvBackend.TRITON if speedup > 1.0 else ConvBackend.REFERENCE


def large_kernel_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> torch.Tensor:
    """Stride-1 zero-"same"-padded 2-D convolution with a fused activation.

    ``y = act(conv2d(x, weight, bias, padding="same"))`` with ``act`` the identity, ReLU or
    LeakyReLU(``negative_slope``). Differentiable wrt ``x``, ``weight`` and ``bias``. Runs the
    Triton kernels where :func:`conv_backend` says so (their output is channels-last in memory),
    else :func:`large_kernel_conv2d_reference`.

    Args:
        x: input ``[B, C_in, H, W]``.
        weight: ``[C_out, C_in, KH, KW]``; the Triton path takes odd ``KH, KW`` in 3..11 and
            4..64 channels in and out, float32 (TF32 where cuDNN may use it), bfloat16 or float16.
        bias: ``[C_out]`` or ``None``.
        activation: ``"none"``, ``"relu"`` or ``"leaky_relu"`` (an :class:`Activation`).
        negative_slope: the LeakyReLU slope.

    Returns:
        ``[B, C_out, H, W]`` in the dtype of ``x``.

    Raises:
        TypeError: if ``x``, ``weight`` or ``bias`` is not a tensor.
        ValueError: on mismatched shapes, dtypes or devices, or an unknown activation.

    Example:
        >>> import torch
        >>> x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 7, 7)
        >>> large_kernel_conv2d(x, w, activation="leaky_relu").shape
        torch.Size([1, 6, 8, 8])
    """
    if isinstance(x, torch.Tensor) and torch.is_autocast_enabled(x.device.type):
        # Autocast does not see through the custom op: apply its conv policy here.
        dtype = torch.get_autocast_dtype(x.device.type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
    act = _check_conv_args(x, weight, bias, activation)
    if conv_backend(x, weight, bias, act, negative_slope) is ConvBackend.TRITON:
        return _conv_op(x, weight, bias, act.value, float(negative_slope))
    return large_kernel_conv2d_reference(x, weight, bias, act, negative_slope)
