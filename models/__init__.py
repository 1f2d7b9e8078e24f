"""Reference models built on flowkit (PyramidFlow, CS-Flow, a baseline) and the application
around them.

- models and what serves them: :mod:`.base` (the interface and the registry),
  :mod:`.pyramidflow`, :mod:`.csflow`, :mod:`.baseline`, :mod:`.data`, :mod:`.metrics`;
- the application: :mod:`.engine` (run folders, checkpoints, training, evaluation,
  prediction) and :mod:`.cli` (the ``flowkit`` command).

Nothing heavy is imported until used: ``flowkit --help`` starts without PyTorch. The built-in
models register on the first read of :data:`~flowkit.models.base.MODELS`.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "MODELS",
    "AnomalyModel",
    "baseline",
    "build_model",
    "csflow",
    "load_run",
    "pyramidflow",
    "register_model",
]

_BASE_NAMES = frozenset({"MODELS", "AnomalyModel", "build_model", "register_model"})
_SUBMODULES = frozenset({"baseline", "csflow", "pyramidflow"})


def __getattr__(name: str) -> Any:
    """Import what is asked for on first use (PEP 562)."""
    if name in _BASE_NAMES:
        return getattr(importlib.import_module(".base", __name__), name)
    if name == "load_run":
        return importlib.import_module(".engine.trained_run", __name__).load_run
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
