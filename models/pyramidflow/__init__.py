"""PyramidFlow (CVPR 2023): pyramid normalizing flow with latent-template contrast."""

from .defaults import defaults_for
from .encoder import Encoder, ResNet18Stem, SemiOrthogonalConv1x1
from .loss import fourier_pair_loss, pair_differences
from .model import PyramidFlow, block_order

__all__ = [
    "Encoder",
    "PyramidFlow",
    "ResNet18Stem",
    "SemiOrthogonalConv1x1",
    "block_order",
    "defaults_for",
    "fourier_pair_loss",
    "pair_differences",
]
