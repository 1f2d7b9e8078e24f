"""Triton kernels for flowkit's hot spots, each with a plain-PyTorch reference it falls back to.

Import the ops from their modules; this package only exposes the switch between kernels and
references (:func:`use_kernels`, the ``FLOWKIT_KERNELS`` environment variable).
"""

from .dispatch import ENV_VAR, kernels_enabled, triton_available, use_kernels, use_triton

__all__ = ["ENV_VAR", "kernels_enabled", "triton_available", "use_kernels", "use_triton"]
