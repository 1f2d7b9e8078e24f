"""CS-Flow (WACV 2022): a cross-scale normalizing flow on frozen multi-scale features."""

from .features import (
    Backbone,
    MultiScaleFeatures,
    RandomPatchEmbedding,
    build_backbone,
)
from .model import (
    ChannelReduction,
    CSFlow,
    ImageScore,
    MapMode,
    nll_loss,
    top_fraction_mean,
)

__all__ = [
    "Backbone",
    "CSFlow",
    "ChannelReduction",
    "ImageScore",
    "MapMode",
    "MultiScaleFeatures",
    "RandomPatchEmbedding",
    "build_backbone",
    "nll_loss",
    "top_fraction_mean",
]
