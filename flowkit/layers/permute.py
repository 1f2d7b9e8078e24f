"""Fixed channel permutations: volume-preserving mixing between coupling layers."""

from __future__ import annotations

import torch
from torch import Tensor

from ..core import Flow, State, zero_logdet
from ..validation import check_channels

__all__ = ["Permute", "Reverse"]


class Permute(Flow):
    """Permute the channels (dim 1) with a fixed permutation; logdet 0.

    Args:
        channels: number of channels.
        seed: seed of the random permutation (``None`` draws it from torch's global generator).
            The permutation is a buffer, so a checkpoint restores it whatever the seed.

    Example:
        >>> import torch
        >>> from flowkit.layers import Permute
        >>> flow = Permute(6, seed=1)
        >>> x = torch.randn(2, 6, 3, 3)
        >>> torch.equal(flow.inverse(flow(x)[0]), x)
        True
    """

    def __init__(self, channels: int, seed: int | None = None) -> None:
        super().__init__()
        self.channels = channels
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        self.register_buffer("permutation", self._make(channels, generator))
        self.register_buffer("inverse_permutation", torch.argsort(self.permutation))

    @staticmethod
    def _make(channels: int, generator: torch.Generator | None) -> Tensor:
        return torch.randperm(channels, generator=generator)

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """``y[:, i] = x[:, permutation[i]]``."""
        x = check_channels(self, x, self.channels)
        return x.index_select(1, self.permutation), zero_logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """Undo the permutation."""
        y = check_channels(self, y, self.channels)
        return y.index_select(1, self.inverse_permutation), zero_logdet(y)


class Reverse(Permute):
    """Reverse the channel order (the permutation of RealNVP's alternating masks)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)

    @staticmethod
    def _make(channels: int, generator: torch.Generator | None) -> Tensor:
        return torch.arange(channels - 1, -1, -1)
