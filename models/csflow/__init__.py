"""CS-Flow (WACV 2022): a cross-scale normalizing flow on frozen multi-scale features."""

from .features import (
    Backbone,
    MultiScaleFeatures,
    RandomPatchEmbedding,
    build_backbone,
)
from .model import CSFlow, MapMode, nll_loss

__all__ = [
    "Backbone",
    "CSFlow",
    "MapMode",
    "MultiScaleFeatures",
    "RandomPatchEmbedding",
    "build_backbone",
    "nll_loss",
]
