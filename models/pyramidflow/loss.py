"""PyramidFlow's training loss: latent differences of image pairs, in the Fourier domain."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from flowkit.pyramid import compose

__all__ = ["fourier_pair_loss", "pair_differences"]


def pair_differences(levels: Sequence[Tensor]) -> list[Tensor]:
    """``|z_a - z_b|^2`` for every pair ``a < b`` of the batch, per level ``[P, C, H, W]``."""
    batch = levels[0].shape[0]
    if batch < 2:
        raise ValueError(
            f"PyramidFlow's loss contrasts pairs of images but the batch has {batch}; "
            "use a batch size of at least 2"
        )
    first, second = torch.triu_indices(batch, batch, offset=1, device=levels[0].device)
    return [(z[first] - z[second]).square() for z in levels]


def fourier_pair_loss(levels: Sequence[Tensor], mode: str) -> Tensor:
    """The mean magnitude of the 2-D FFT of the pair differences, composed through the pyramid.

    Normal images of one category should map to nearby latents; the Fourier magnitude weighs
    all spatial frequencies of the difference map alike.
    """
    composed = compose(pair_differences(levels), mode).mean(dim=1)
    return torch.fft.fft2(composed.float()).abs().mean()
