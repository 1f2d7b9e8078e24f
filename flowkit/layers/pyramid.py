"""The Laplacian pyramid as an injective flow layer: one tensor to a tuple of levels."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import InjectiveFlow, State, zero_logdet
from ..kernels.pyramid import PyramidMode
from ..pyramid import compose, decompose
from ..validation import check_single, check_tuple

__all__ = ["LaplacianPyramid"]


class LaplacianPyramid(InjectiveFlow):
    """``x [B, C, H, W] -> (residual_0, ..., residual_{L-2}, lowpass)``, finest first.

    More numbers come out than go in (the map is injective, not bijective): ``inverse``
    (recomposition) is an exact left inverse, and no log-determinant is claimed (``logdet`` is
    returned as zeros so the layer composes; ``bijective`` is ``False``). See
    :mod:`flowkit.pyramid` for the two modes' exact semantics.

    Args:
        levels: number of levels ``L`` (1 returns the input as a 1-tuple).
        mode: ``"pyramidflow"`` or ``"gaussian"``.

    Example:
        >>> import torch
        >>> pyramid = LaplacianPyramid(3, mode="gaussian")
        >>> levels, _ = pyramid(torch.randn(1, 3, 17, 12))
        >>> [tuple(t.shape[-2:]) for t in levels]
        [(17, 12), (9, 6), (5, 3)]
    """

    def __init__(self, levels: int, mode: PyramidMode | str = PyramidMode.PYRAMIDFLOW) -> None:
        super().__init__()
        if levels < 1:
            raise ValueError(f"LaplacianPyramid needs levels >= 1, got {levels}")
        self.levels = levels
        self.mode = PyramidMode(mode)

    def forward(self, x: State) -> tuple[tuple[Tensor, ...], Tensor]:
        """Decompose ``x`` into its levels."""
        x = check_single(self, x, min_dim=4)
        return decompose(x, self.levels, self.mode), zero_logdet(x)

    def inverse(self, y: State) -> Tensor:
        """Recompose the image from its levels."""
        return compose(check_tuple(self, y, self.levels), self.mode)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """Recompose; the zero logdet only keeps the composition uniform."""
        x = self.inverse(y)
        return x, torch.zeros(x.shape[0], dtype=zero_logdet(x).dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, mode={self.mode.value}"
