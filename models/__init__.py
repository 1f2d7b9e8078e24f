"""Reference models built on flowkit (PyramidFlow, CS-Flow) and the application around them.

Importing this package registers the built-in models (see :data:`flowkit.models.base.MODELS`).
"""

from . import baseline, csflow, pyramidflow
from .base import MODELS, AnomalyModel, build_model, register_model

__all__ = [
    "MODELS",
    "AnomalyModel",
    "baseline",
    "build_model",
    "csflow",
    "pyramidflow",
    "register_model",
]
