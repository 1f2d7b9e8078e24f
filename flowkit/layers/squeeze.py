"""Space-to-depth rearrangements: the squeeze of RealNVP/Glow and the orthogonal Haar step."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow, State, zero_logdet
from ..validation import check_divisible, check_single

__all__ = ["HaarDownsample", "Squeeze"]


class Squeeze(Flow):
    """``[B, C, H, W] -> [B, C*f*f, H/f, W/f]`` by moving ``f x f`` blocks into channels.

    A permutation of the entries: logdet 0. Same channel order as ``F.pixel_unshuffle``.

    Args:
        factor: block size ``f``; height and width must be divisible by it.
    """

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        if factor < 2:
            raise ValueError(f"Squeeze factor must be an integer >= 2, got {factor}")
        self.factor = factor

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """Move each ``f x f`` block into channels."""
        x = check_single(self, x)
        check_divisible(self, x, self.factor)
        return F.pixel_unshuffle(x, self.factor), zero_logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """Move channels back into ``f x f`` blocks."""
        y = check_single(self, y)
        if y.dim() != 4 or y.shape[1] % (self.factor**2):
            raise ValueError(
                f"Squeeze.inverse needs [B, C*{self.factor**2}, H, W]; got shape {tuple(y.shape)}"
            )
        return F.pixel_shuffle(y, self.factor), zero_logdet(y)


class HaarDownsample(Flow):
    """The orthonormal 2-D Haar wavelet step: ``[B, C, H, W] -> [B, 4C, H/2, W/2]``.

    Per channel, each 2x2 block ``(a, b; c, d)`` maps to the average ``(a+b+c+d)/2`` and the
    horizontal, vertical and diagonal details ``(a-b+c-d)/2``, ``(a+b-c-d)/2``,
    ``(a-b-c+d)/2``; output channels are ``[averages of all C, horizontal, vertical,
    diagonal]`` so the low-pass comes first. Orthogonal: logdet 0, inverse its transpose.

    References:
        Jacobsen et al., "i-RevNet: Deep Invertible Networks", arXiv:1802.07088;
        Etmann et al., "iUNets: Fully invertible U-Nets with Learnable Up- and
        Downsampling", arXiv:2005.05220.
    """

    def __init__(self) -> None:
        super().__init__()
        basis = torch.tensor(
            [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0], [1.0, 1.0, -1.0, -1.0],
             [1.0, -1.0, -1.0, 1.0]]
        ) / 2
        self.register_buffer("basis", basis, persistent=False)

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """Transform each 2x2 block into one low-pass and three detail coefficients."""
        x = check_single(self, x)
        check_divisible(self, x, 2)
        b, c, h, w = x.shape
        blocks = F.pixel_unshuffle(x, 2).view(b, c, 4, h // 2, w // 2)
        out = torch.einsum("kj,bcjhw->bkchw", self.basis.to(x.dtype), blocks)
        return out.reshape(b, 4 * c, h // 2, w // 2), zero_logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """The transpose (= inverse) of the orthonormal basis."""
        y = check_single(self, y)
        if y.dim() != 4 or y.shape[1] % 4:
            raise ValueError(
                f"HaarDownsample.inverse needs [B, 4C, H, W]; got shape {tuple(y.shape)}"
            )
        b, c4, h, w = y.shape
        coeffs = y.view(b, 4, c4 // 4, h, w)
        blocks = torch.einsum("kj,bkchw->bcjhw", self.basis.to(y.dtype), coeffs)
        return F.pixel_shuffle(blocks.reshape(b, c4, h, w), 2), zero_logdet(y)
