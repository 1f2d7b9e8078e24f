"""Laplacian-pyramid ops (PyramidFlow's and OpenCV's pyramids): the public API in one place.

Each op has a Triton path (CUDA; the CPU interpreter in tests), a plain-PyTorch
``*_reference`` with the same signature and semantics, and a ``flowkit::`` custom op with a
fake implementation and registered autograd, so ``torch.compile`` traces through it. See
:mod:`flowkit.kernels.pyr_common` for the two modes and their size rules.

Example:
    >>> import torch
    >>> from flowkit.kernels.pyramid import check_pyramid_size, pyr_level, pyr_level_inverse
    >>> check_pyramid_size(15, 9, 3, "gaussian")
    >>> x = torch.randn(1, 2, 15, 9, dtype=torch.float64)
    >>> residual, down = pyr_level(x, "gaussian")
    >>> down.shape
    torch.Size([1, 2, 8, 5])
    >>> torch.allclose(pyr_level_inverse(residual, down, "gaussian"), x)
    True
"""

from .pyr_common import (
    BINOMIAL_NORM,
    BINOMIAL_TAPS,
    PyramidMode,
    check_pyramid_size,
    check_up_size,
    pyr_down_size,
    valid_sizes_near,
)
from .pyr_down import pyr_down
from .pyr_level import pyr_level, pyr_level_inverse
from .pyr_reference import (
    pyr_down_reference,
    pyr_level_inverse_reference,
    pyr_level_reference,
    pyr_up_reference,
)
from .pyr_up import pyr_up

__all__ = [
    "BINOMIAL_NORM",
    "BINOMIAL_TAPS",
    "PyramidMode",
    "check_pyramid_size",
    "check_up_size",
    "pyr_down",
    "pyr_down_reference",
    "pyr_down_size",
    "pyr_level",
    "pyr_level_inverse",
    "pyr_level_inverse_reference",
    "pyr_level_reference",
    "pyr_up",
    "pyr_up_reference",
    "valid_sizes_near",
]
