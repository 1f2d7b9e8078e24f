"""Activation normalization (Glow): a per-channel affine map with a data-dependent init."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import Flow, State, is_recomputing
from ..validation import check_channels

__all__ = ["ActNorm"]


class ActNorm(Flow):
    """``y = (x + bias) * exp(log_scale)`` per channel, initialized from the first batch.

    On the first forward in training mode, ``bias`` and ``log_scale`` are set so that the
    output has zero mean and unit variance per channel over that batch (exactly once: the
    ``is_initialized`` buffer records it, a checkpoint keeps it, and a memory-saving replay
    never re-initializes). ``logdet = (prod of non-channel dims) * sum(log_scale)``.

    Args:
        channels: size of dim 1 of the input ``[batch, channels, *spatial]``.
        eps: added to the standard deviation at init.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        arXiv:1807.03039.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("is_initialized", torch.tensor(False))

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, self.channels) + (1,) * (x.dim() - 2)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        flat = x.transpose(0, 1).reshape(self.channels, -1)
        self.bias.copy_(-flat.mean(dim=1))
        if flat.shape[1] > 1:  # one value per channel has no spread to normalize: keep scale 1
            self.log_scale.copy_(-torch.log(flat.std(dim=1, unbiased=False) + self.eps))
        self.is_initialized.fill_(True)

    def _logdet(self, x: Tensor) -> Tensor:
        pixels = x[0, 0].numel()
        return (pixels * self.log_scale.sum()).expand(x.shape[0])

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """Normalize ``x`` per channel (initializing from it on the first training batch)."""
        x = check_channels(self, x, self.channels)
        # Reading the flag is a host sync, but only in training mode before the first step
        # is known to have run; a Python-side cache keeps the hot path free of it.
        if self.training and not self._known_initialized() and not is_recomputing():
            self._initialize(x)
        shape = self._shape(x)
        y = (x + self.bias.view(shape)) * self.log_scale.view(shape).exp()
        return y, self._logdet(x)

    def _known_initialized(self) -> bool:
        if not getattr(self, "_initialized_cache", False):
            self._initialized_cache = bool(self.is_initialized)
        return self._initialized_cache

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._initialized_cache = False
        super()._load_from_state_dict(*args, **kwargs)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """``x = y * exp(-log_scale) - bias``."""
        y = check_channels(self, y, self.channels)
        shape = self._shape(y)
        x = y * (-self.log_scale.view(shape)).exp() - self.bias.view(shape)
        return x, -self._logdet(y)
