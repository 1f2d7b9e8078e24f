"""Large-kernel "same" 2-D convolution (3x3 .. 11x11, 4..64 channels) with a fused activation.

The coupling subnets of PyramidFlow-like flows are 7x7 convolutions with few channels at high
resolution. The Triton kernels here specialise for that case: activations are NHWC
(channels-last) and the ``kw`` taps of each kernel row are folded into the ``tl.dot`` reduction;
the kernels and their launchers are in :mod:`flowkit.kernels.conv_triton`, imported only when
they run. This module holds what needs no Triton: the reference, the argument checks, the custom
op with its autograd, and the dispatch.

:func:`large_kernel_conv2d` takes the Triton path only for CUDA tensors of a supported shape and
only where the ``conv`` dispatch table (:mod:`flowkit.kernels.dispatch_table`) holds a validation
on this device capability, precision and shape class (:func:`conv_shape_class`) at which Triton
was correct and beat cuDNN; ``FLOWKIT_KERNELS=1`` forces it, ``0`` forbids it. Everything else
goes to :func:`large_kernel_conv2d_reference` (``F.conv2d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .choice import Choice
from .dispatch import use_triton
from .dispatch_table import OpFamily, size_class

__all__ = [
    "OP_NAME",
    "Activation",
    "ConvBackend",
    "activation_code",
    "activation_grad",
    "adjoint_weight",
    "check_conv_args",
    "conv_backend",
    "conv_precision",
    "conv_shape_class",
    "conv_supported",
    "describe_conv_support",
    "large_kernel_conv2d",
    "large_kernel_conv2d_reference",
]

OP_NAME = "large_kernel_conv2d"
"""The op's name in the ``conv`` dispatch table."""

KERNEL_SIZES = range(3, 12, 2)
CHANNELS = range(4, 65)
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Activation(Choice):
    """The activation fused into the convolution's epilogue."""

    NONE = "none"
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"


class ConvBackend(Choice):
    """Which implementation :func:`large_kernel_conv2d` runs."""

    REFERENCE = "reference"
    TRITON = "triton"


_ACTIVATION_CODE = {Activation.NONE: 0, Activation.RELU: 1, Activation.LEAKY_RELU: 2}


def activation_code(activation: Activation) -> int:
    """The kernels' integer code of an activation: 0 none, 1 ReLU, 2 LeakyReLU."""
    return _ACTIVATION_CODE[activation]


def conv_precision(dtype: torch.dtype) -> str:
    """The arithmetic of a convolution in ``dtype``: its name, or ``tf32`` for float32 when
    ``torch.backends.cudnn.allow_tf32`` lets convolutions use TF32 (as ``F.conv2d`` does)."""
    if dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
        return "tf32"
    return str(dtype).removeprefix("torch.")


def adjoint_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weight whose "same" convolution is the adjoint of ``weight``'s: flipped, transposed."""
    return weight.flip(2, 3).transpose(0, 1)


def activation_grad(
    grad_out: torch.Tensor, out: torch.Tensor, activation: Activation, negative_slope: float
) -> torch.Tensor:
    """``dz = dy * act'(z)``, read from the output: ``z > 0`` iff ``y > 0`` when slope >= 0."""
    if activation is Activation.NONE:
        return grad_out
    slope = negative_slope if activation is Activation.LEAKY_RELU else 0.0
    return torch.where(out > 0, grad_out, grad_out * slope)


def describe_conv_support(x: torch.Tensor, weight: torch.Tensor, negative_slope: float) -> str:
    """The message for a convolution the Triton kernels do not implement."""
    return (
        f"the Triton convolution supports odd kernel sizes {list(KERNEL_SIZES)}, "
        f"{CHANNELS.start}..{CHANNELS.stop - 1} channels, dtypes {SUPPORTED_DTYPES} and a "
        f"non-negative LeakyReLU slope; got x {tuple(x.shape)} {x.dtype}, weight "
        f"{tuple(weight.shape)}, slope {negative_slope}; use large_kernel_conv2d, which falls back"
    )


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
    act = check_conv_args(x, weight, bias, activation)
    z = F.conv2d(x, weight, bias, padding="same")
    if act is Activation.RELU:
        return F.relu(z)
    if act is Activation.LEAKY_RELU:
        return F.leaky_relu(z, negative_slope)
    return z


def check_conv_args(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: Activation | str,
) -> Activation:
    """Validate the arguments of a convolution; return the activation as an enum.

    Raises:
        TypeError: if ``x``, ``weight`` or ``bias`` is not a tensor.
        ValueError: on mismatched shapes, dtypes or devices, or an unknown activation.
    """
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
    from .conv_triton import large_kernel_conv2d_triton

    return large_kernel_conv2d_triton(x, weight, bias, activation, negative_slope)


@_conv_op.register_fake
def _conv_op_fake(x, weight, bias, activation, negative_slope):
    return torch.empty((x.shape[0], weight.shape[0], *x.shape[2:]), device=x.device,
                       dtype=x.dtype, memory_format=torch.channels_last)


@torch.library.custom_op("flowkit::large_kernel_conv2d_weight_grad", mutates_args=())
def _weight_grad_op(
    grad_z: torch.Tensor, x: torch.Tensor, kernel_h: int, kernel_w: int
) -> tuple[torch.Tensor, torch.Tensor]:
    from .conv_triton import large_kernel_conv2d_weight_grad_triton

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
    grad_z = activation_grad(grad_out, out, ctx.activation, ctx.negative_slope)
    grad_x = grad_w = grad_b = None
    if ctx.needs_input_grad[0]:
        grad_x = _conv_op(grad_z, adjoint_weight(weight), None, Activation.NONE.value, 0.0)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        grad_w, grad_b = _weight_grad_op(grad_z, x, weight.shape[2], weight.shape[3])
    return grad_x, grad_w, grad_b if ctx.has_bias else None, None, None


_conv_op.register_autograd(_conv_backward, setup_context=_conv_setup_context)


# ----------------------------------------------------------------------------------------------
# Dispatch and the public op
# ----------------------------------------------------------------------------------------------


def conv_shape_class(x: torch.Tensor, weight: torch.Tensor, grad: bool) -> str:
    """The dispatch key of a call's shape: channels, kernel size, pass and a pixel-count bucket.

    Example:
        >>> import torch
        >>> conv_shape_class(torch.zeros(2, 16, 256, 256), torch.zeros(32, 16, 7, 7), True)
        'c16-32:k7x7:px<=2^18:fwd_bwd'
    """
    c_out, c_in, kh, kw = weight.shape
    pixels = size_class(x.shape[0] * x.shape[2] * x.shape[3]).replace("n", "px", 1)
    return f"c{c_in}-{c_out}:k{kh}x{kw}:{pixels}:{'fwd_bwd' if grad else 'fwd'}"


def conv_backend(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    activation: Activation | str = Activation.NONE,
    negative_slope: float = 0.01,
) -> ConvBackend:
    """Which implementation :func:`large_kernel_conv2d` runs for these arguments.

    Triton only for CUDA tensors of a supported shape (:func:`conv_supported`) and where
    :func:`flowkit.kernels.dispatch.use_triton` says so: forced by ``FLOWKIT_KERNELS=1`` or
    ``use_kernels(True)``, else a winning row of the ``conv`` table for this device capability,
    precision (:func:`conv_precision`) and :func:`conv_shape_class` (``fwd_bwd`` when a gradient
    will be taken). Otherwise the reference.
    """
    tensors = (x, weight) if bias is None else (x, weight, bias)
    if not conv_supported(x, weight, activation, negative_slope):
        return ConvBackend.REFERENCE
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    shape_class = conv_shape_class(x, weight, grad)
    if use_triton(OpFamily.CONV, OP_NAME, conv_precision(x.dtype), shape_class, *tensors):
        return ConvBackend.TRITON
    return ConvBackend.REFERENCE


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
    act = check_conv_args(x, weight, bias, activation)
    if conv_backend(x, weight, bias, act, negative_slope) is ConvBackend.TRITON:
        return _conv_op(x, weight, bias, act.value, float(negative_slope))
    return large_kernel_conv2d_reference(x, weight, bias, act, negative_slope)
