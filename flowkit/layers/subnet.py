"""The default coupling subnet: conv - activation - conv, starting as the identity flow."""

from __future__ import annotations

import enum

from torch import Tensor, nn

__all__ = ["Activation", "ConvSubnet"]


class Activation(str, enum.Enum):
    """Hidden activation of :class:`ConvSubnet`."""

    RELU = "relu"
    LEAKY_RELU = "leaky_relu"


class ConvSubnet(nn.Module):
    """``conv(k) -> activation -> conv(k)`` with "same" zero padding; the last conv starts at 0.

    A coupling layer whose subnet outputs zeros is the identity, so a deep flow starts close to
    it and trains stably (Glow's zero init). Usable as FrEIA-style constructor:
    ``AffineCoupling(c, lambda c_in, c_out: ConvSubnet(c_in, c_out, hidden=64))``.

    Args:
        in_channels: channels of the conditioning input.
        out_channels: channels of the output (for an affine coupling: twice the active half).
        hidden: channels of the hidden layer.
        kernel_size: odd kernel size of both convolutions (PyramidFlow uses 7).
        activation: hidden nonlinearity.
        negative_slope: slope of the leaky ReLU for negative inputs.
        bias: whether the convolutions have a bias.
        dropout: dropout probability after the activation (0 disables it).
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
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(
                f"ConvSubnet needs an odd kernel_size for 'same' padding, got {kernel_size}"
            )
        activation = Activation(activation)
        padding = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size, padding=padding, bias=bias)
        self.act = (
            nn.ReLU() if activation is Activation.RELU else nn.LeakyReLU(negative_slope)
        )
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(hidden, out_channels, kernel_size, padding=padding, bias=bias)
        nn.init.zeros_(self.conv2.weight)
        if bias:
            nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``conv2(dropout(act(conv1(x))))``."""
        return self.conv2(self.dropout(self.act(self.conv1(x))))
