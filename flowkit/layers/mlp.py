"""A multilayer-perceptron subnet for couplings on vectors, starting as the identity flow."""

from __future__ import annotations

from torch import Tensor, nn

from ..validation import check_single

__all__ = ["MLPSubnet"]


class MLPSubnet(nn.Module):
    """``depth`` linear layers with activations in between; the last layer starts at zero.

    Acts on dim 1: a vector batch ``[B, in_features]`` maps to ``[B, out_features]``; a
    ``[B, in_features, *spatial]`` map is transformed at every position alike (a stack of 1x1
    convolutions). A coupling whose subnet outputs zeros is the identity, so a flow starts close
    to it (Glow's zero init). Usable as a FrEIA-style constructor:
    ``RQSplineCoupling(d, lambda i, o: MLPSubnet(i, o, hidden=64))``.

    Args:
        in_features: features of the conditioning input.
        out_features: features of the output.
        hidden: width of the hidden layers.
        depth: number of linear layers (at least 1; 1 is a single zero-initialized linear map).
        activation: the module class of the hidden nonlinearity (instantiated without arguments).

    Example:
        >>> import torch
        >>> net = MLPSubnet(3, 4, hidden=16, depth=3)
        >>> net(torch.randn(5, 3)).abs().max().item()
        0.0

    Raises:
        ValueError: for a depth below 1 or non-positive sizes.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 64,
        depth: int = 3,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"MLPSubnet needs depth >= 1 linear layers, got depth={depth}")
        if min(in_features, out_features, hidden) < 1:
            raise ValueError(
                f"MLPSubnet needs positive sizes, got in_features={in_features}, "
                f"out_features={out_features}, hidden={hidden}"
            )
        widths = [in_features] + [hidden] * (depth - 1) + [out_features]
        modules: list[nn.Module] = []
        for index, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            if index:
                modules.append(activation())
            modules.append(nn.Linear(n_in, n_out))
        nn.init.zeros_(modules[-1].weight)
        nn.init.zeros_(modules[-1].bias)
        self.net = nn.Sequential(*modules)
        self.in_features = in_features

    def forward(self, x: Tensor) -> Tensor:
        """``[B, in_features, *spatial] -> [B, out_features, *spatial]``."""
        x = check_single(self, x)
        if x.shape[1] != self.in_features:
            raise ValueError(
                f"MLPSubnet was built for {self.in_features} input features (dim 1) but got "
                f"shape {tuple(x.shape)}"
            )
        return self.net(x.movedim(1, -1)).movedim(-1, 1)
