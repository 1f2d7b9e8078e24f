"""Invertible 1x1 convolution (Glow): a learned channel mixing, optionally LU-parametrized."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, State
from ..validation import check_channels

__all__ = ["InvConv1x1"]


class InvConv1x1(Flow):
    """``y[:, :, p] = W x[:, :, p]`` at every position ``p``; ``logdet = pixels * log|det W|``.

    With ``lu=True`` (default), ``W = P L (U + diag(sign * exp(log_s)))`` with a fixed
    permutation ``P``, unit lower-triangular ``L`` and strictly upper ``U``: the determinant is
    ``prod(sign * exp(log_s))`` and is never computed by a decomposition. With
    ``volume_norm=True`` the log-scales are mean-subtracted so ``|det W| = 1`` (PyramidFlow's
    choice). ``lu=False`` learns ``W`` directly (``slogdet`` per call). Initialized to a random
    rotation, as in Glow. Works on ``[batch, channels, *spatial]`` of any rank.

    Args:
        channels: number of channels.
        lu: use the LU parametrization.
        volume_norm: constrain ``|det W| = 1`` (LU only).

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        arXiv:1807.03039.
    """

    def __init__(self, channels: int, lu: bool = True, volume_norm: bool = False) -> None:
        super().__init__()
        if volume_norm and not lu:
            raise ValueError("InvConv1x1(volume_norm=True) needs the LU parametrization (lu=True)")
        self.channels, self.lu, self.volume_norm = channels, lu, volume_norm
        rotation = torch.linalg.qr(torch.randn(channels, channels))[0]
        if not lu:
            self.weight = nn.Parameter(rotation)
            return
        p, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()
        self.register_buffer("permutation", p)
        self.register_buffer("sign", diagonal.sign())
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(diagonal.abs().log())

    def _log_s(self) -> Tensor:
        return self.log_s - self.log_s.mean() if self.volume_norm else self.log_s

    def weight_and_logabsdet(self) -> tuple[Tensor, Tensor]:
        """The matrix ``W`` and ``log|det W|``."""
        if not self.lu:
            return self.weight, torch.linalg.slogdet(self.weight)[1]
        log_s = self._log_s()
        eye = torch.eye(self.channels, dtype=log_s.dtype, device=log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign * log_s.exp())
        return self.permutation @ lower @ upper, log_s.sum()

    @staticmethod
    def _mix(x: Tensor, weight: Tensor) -> Tensor:
        shape = weight.shape + (1,) * (x.dim() - 2)
        return F.conv2d(x, weight.view(shape)) if x.dim() == 4 else torch.einsum(
            "ij,bj...->bi...", weight, x
        )

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """Mix the channels with ``W`` (in at least float32, also under autocast)."""
        x = check_channels(self, x, self.channels)
        weight, logabsdet = self.weight_and_logabsdet()
        wide = torch.promote_types(x.dtype, torch.float32)
        pixels = x[0, 0].numel()
        # Autocast would round the mixed state to bf16/fp16, and the inverse could not undo it.
        with torch.autocast(x.device.type, enabled=False):
            y = self._mix(x.to(wide), weight.to(wide)).to(x.dtype)
        return y, (pixels * logabsdet).expand(x.shape[0])

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """Mix the channels with ``W^-1`` (computed in at least float32)."""
        y = check_channels(self, y, self.channels)
        weight, logabsdet = self.weight_and_logabsdet()
        wide = torch.promote_types(weight.dtype, torch.float32)
        inverse = torch.linalg.inv(weight.to(wide))
        pixels = y[0, 0].numel()
        with torch.autocast(y.device.type, enabled=False):
            x = self._mix(y.to(wide), inverse).to(y.dtype)
        return x, (-pixels * logabsdet).expand(y.shape[0])
