"""The default coupling subnet: conv - activation - conv, starting as the identity flow."""

from __future__ import annotations

from torch import Tensor, nn

from ..kernels.conv import Activation, large_kernel_conv2d

__all__ = ["ConvSubnet"]


class ConvSubnet(nn.Module):
    """``conv(k) -> activation -> conv(k)`` with "same" zero padding; the last conv starts at 0.

    A coupling layer whose subnet outputs zeros is the identity, so a deep flow starts close to
    it and trains stably (Glow's zero init). The convolutions go through
    :func:`flowkit.kernels.conv.large_kernel_conv2d` (activation fused into the first), which
    takes the Triton kernel on CUDA where it measured faster than cuDNN and ``F.conv2d``
    elsewhere; the weights live in ordinary ``nn.Conv2d`` modules. Usable as a FrEIA-style
    constructor: ``AffineCoupling(c, lambda c_in, c_out: ConvSubnet(c_in, c_out, hidden=64))``.

    Args:
        in_channels: channels of the conditioning input.
        out_channels: channels of the output (for an affine coupling: twice the active half).
        hidden: channels of the hidden layer.
        kernel_size: odd kernel size of both convolutions (PyramidFlow uses 7).
        activation: hidden nonlinearity, ``"relu"``, ``"leaky_relu"`` or ``"none"``.
        negative_slope: slope of the leaky ReLU for negative inputs.
        bias: whether the convolutions have a bias.
        dropout: dropout probability after the activation (0 disables it).
        last_stride: stride of the last convolution; 2 computes only every second output
            pixel, which equals a nearest-neighbour downsampling of the stride-1 output at a
            quarter of the cost (PyramidFlow's coarse-from-fine coupling).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden: int,
        kernel_size: int = 3,
        activation: Activation | str = Activation.LEAKY_RELU,
        negative_slope: float = 0.01,
        bias: bool = True,
        dropout: float = 0.0,
        last_stride: int = 1,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"ConvSubnet needs an odd kernel_size for 'same' padding, got {kernel_size}"
            )
        self.activation = Activation(activation)
        self.negative_slope = negative_slope
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size, padding=padding, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(
            hidden, out_channels, kernel_size, padding=padding, bias=bias, stride=last_stride
        )
        nn.init.zeros_(self.conv2.weight)
        if bias:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``conv2(dropout(act(conv1(x))))``."""
        hidden = large_kernel_conv2d(
            x, self.conv1.weight, self.conv1.bias, self.activation, self.negative_slope
        )
        hidden = self.dropout(hidden)
        if self.conv2.stride != (1, 1):
            return self.conv2(hidden)
        return large_kernel_conv2d(hidden, self.conv2.weight, self.conv2.bias)
