"""Makes ``triton`` look uninstalled in this process: load with ``-p tests.kernels.hide_triton``
(a pytest plugin) or import it first; ``import triton`` then raises ``ModuleNotFoundError``."""

from __future__ import annotations

import sys
from importlib.abc import MetaPathFinder

__all__ = ["TritonBlocker"]


class TritonBlocker(MetaPathFinder):
    """A finder that answers every ``triton`` import as "no module named 'triton'"."""

    def find_spec(self, name, path=None, target=None):
        if name == "triton" or name.startswith("triton."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden)", name=name)
        return None


if "triton" in sys.modules:
    raise RuntimeError("hide_triton must load before anything imports triton")
sys.meta_path.insert(0, TritonBlocker())
