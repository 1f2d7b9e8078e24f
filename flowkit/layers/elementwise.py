"""Elementwise bijections: the alpha-squeezed logit of bounded data, and a learnable affine map.

Both act on each entry alone, so ``logdet`` is the sum of the log-derivatives over all
non-batch dimensions. Neither has a subnet: the memory-saving engine uses the default rebuild
(``inverse`` then a replay), which costs nothing noteworthy for maps this cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, State
from ..errors import FlowInputError
from ..validation import check_single

__all__ = ["ElementwiseAffine", "Logit"]


class Logit(Flow):
    """``y = logit(alpha + (1 - 2 alpha) x)`` for data ``x`` in ``[0, 1]`` (RealNVP's map).

    Squeezing by ``alpha`` keeps the logit finite at the ends of the interval (``alpha = 0``
    needs ``x`` strictly inside ``(0, 1)``); the exact domain is where ``0 < p < 1``, i.e.
    ``(-alpha / (1 - 2 alpha), 1 + alpha / (1 - 2 alpha))``, which contains ``[0, 1]``.
    With ``p = alpha + (1 - 2 alpha) x``: ``log dy/dx = log(1 - 2 alpha) - log p - log(1 - p)``.
    The inverse is the (unsqueezed) sigmoid, defined on all reals;
    ``flowkit.Inverse(Logit(alpha))`` is the sigmoid layer that maps reals into that domain.

    Inputs outside the domain raise (a device-side assertion: no host sync on CUDA, where it
    surfaces at the next synchronization) instead of returning NaN.

    Args:
        alpha: the squeeze, in ``[0, 0.5)``; RealNVP uses 0.05 for images.

    Example:
        >>> import torch
        >>> layer = Logit(alpha=0.05)
        >>> x = torch.rand(2, 3, 4, 4)
        >>> y, logdet = layer(x)
        >>> torch.allclose(layer.inverse(y), x, atol=1e-6)
        True

    References:
        Dinh, Sohl-Dickstein & Bengio, "Density estimation using Real NVP", arXiv:1605.08803
        (section 4.1).
    """

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__()
        if not 0 <= alpha < 0.5:
            raise ValueError(f"Logit needs 0 <= alpha < 0.5, got alpha={alpha!r}")
        self.alpha = float(alpha)
        self.log_scale = math.log1p(-2 * self.alpha)

    def _log_derivative(self, log_p: Tensor, log_1mp: Tensor) -> Tensor:
        return (self.log_scale - log_p - log_1mp).flatten(1).sum(1)

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """``y = logit(alpha + (1 - 2 alpha) x)`` and the summed log-derivative."""
        x = check_single(self, x, min_dim=1)
        p = self.alpha + (1 - 2 * self.alpha) * x
        margin = self.alpha / (1 - 2 * self.alpha)
        torch._assert_async(
            ((p > 0) & (p < 1)).all(),
            f"Logit(alpha={self.alpha}) got values outside its domain ({-margin:.4g}, "
            f"{1 + margin:.4g}) (data in [0, 1] with alpha > 0): scale the data into [0, 1] "
            "first (e.g. flowkit.uniform_dequantize for images)",
        )
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        return log_p - log_1mp, self._log_derivative(log_p, log_1mp)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """``x = (sigmoid(y) - alpha) / (1 - 2 alpha)`` and the inverse's logdet."""
        y = check_single(self, y, min_dim=1)
        x = (torch.sigmoid(y) - self.alpha) / (1 - 2 * self.alpha)
        return x, -self._log_derivative(F.logsigmoid(y), F.logsigmoid(-y))


class ElementwiseAffine(Flow):
    """``y = x * exp(log_scale) + shift`` with learnable parameters of a broadcast shape.

    ``shape`` is the parameters' per-sample shape, broadcast against the input without its
    batch: ``(C,)`` for vectors ``[B, C]``, ``(C, 1, 1)`` for one scale per channel of an
    image, ``(C, H, W)`` for one per entry. Starts as the identity.

    Args:
        shape: the parameter shape (see above).

    Example:
        >>> import torch
        >>> layer = ElementwiseAffine((3, 1, 1))
        >>> y, logdet = layer(torch.randn(2, 3, 4, 4))
        >>> logdet.shape
        torch.Size([2])
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"ElementwiseAffine needs a non-empty positive shape, got {shape!r}")
        self.log_scale = nn.Parameter(torch.zeros(self.shape))
        self.shift = nn.Parameter(torch.zeros(self.shape))

    def _check(self, x: State) -> Tensor:
        x = check_single(self, x, min_dim=1 + len(self.shape))
        per_sample = tuple(x.shape[1:])
        try:
            fits = torch.broadcast_shapes(per_sample, self.shape) == per_sample
        except RuntimeError:
            fits = False
        if not fits:
            raise FlowInputError(
                f"ElementwiseAffine{self.shape} does not broadcast onto an input of shape "
                f"{tuple(x.shape)} (per sample {per_sample}); build it with a shape that does, "
                "e.g. (C, 1, 1) for per-channel parameters of an image"
            )
        return x

    def _logdet(self, x: Tensor) -> Tensor:
        log_scale = self.log_scale.to(x.dtype).expand(x.shape[1:])
        return log_scale.sum().expand(x.shape[0])

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """``y = x * exp(log_scale) + shift``."""
        x = self._check(x)
        y = x * self.log_scale.to(x.dtype).exp() + self.shift.to(x.dtype)
        return y, self._logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """``x = (y - shift) * exp(-log_scale)``."""
        y = self._check(y)
        x = (y - self.shift.to(y.dtype)) * (-self.log_scale.to(y.dtype)).exp()
        return x, -self._logdet(y)
