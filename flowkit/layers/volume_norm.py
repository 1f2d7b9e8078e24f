"""Volume normalization (PyramidFlow): log-scales made zero-mean, so the flow keeps volume.

Subtracting the mean of a coupling's log-scales ``s`` removes the freedom to shrink or grow the
latent volume, which a contrastive (not likelihood) loss would otherwise exploit. Two variants:

- ``channel`` (CVN): the mean over batch and channels, one per pixel; a running mean of fixed
  shape ``[1, 1, H, W]`` at the size given at construction, resized (bilinearly) to the size
  at hand, so a checkpoint evaluates at any resolution.
- ``spatial`` (SVN): the mean over batch, height and width, one per channel ``[1, C, 1, 1]``.

Training mode subtracts the batch mean and updates the running mean (momentum 0.1) under
``no_grad``, once per step: never during a memory-saving replay. Eval mode subtracts the running
mean, a constant, so the coupling's logdet ``sum(s - mean)`` is exact per sample.
``updates_per_step=3`` applies the update three times with the step's mean: what the official
PyramidFlow's memory-saving engine (autoFlow) does by re-running every block's forward twice in
backward (for parity runs only: the running mean then forgets faster, momentum ``1 - 0.9^3``).

References:
    Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using Pyramid
    Normalizing Flow", CVPR 2023, arXiv:2303.02595.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import is_recomputing
from ..kernels.choice import Choice

__all__ = ["VolumeNorm", "VolumeNormMode"]


class VolumeNormMode(Choice):
    """Which mean volume normalization subtracts."""

    CHANNEL = "channel"  # CVN: per pixel, over batch and channels
    SPATIAL = "spatial"  # SVN: per channel, over batch, height and width


class VolumeNorm(nn.Module):
    """Subtract the batch mean (training) or running mean (eval) of log-scales ``[B, C, H, W]``.

    Args:
        mode: ``"channel"`` (CVN) or ``"spatial"`` (SVN).
        channels: channels of the log-scales (the SVN buffer's size).
        size: ``(H, W)`` of the CVN running mean (the training size of this map).
        momentum: weight of the new batch mean in the running mean.
        updates_per_step: how many times a training step applies the update (1; 3 reproduces
            the official memory-saving code).

    Raises:
        ValueError: if ``momentum`` is not in ``[0, 1]`` or ``updates_per_step`` is below 1.

    Example:
        >>> import torch
        >>> norm = VolumeNorm("spatial", channels=3)
        >>> s = norm(torch.randn(2, 3, 4, 4) + 5)
        >>> bool(s.mean((0, 2, 3)).abs().max() < 1e-5)
        True
    """

    def __init__(
        self,
        mode: VolumeNormMode | str,
        channels: int,
        size: tuple[int, int] = (1, 1),
        momentum: float = 0.1,
        updates_per_step: int = 1,
    ) -> None:
        super().__init__()
        self.mode = VolumeNormMode(mode)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"VolumeNorm momentum must be in [0, 1], got {momentum!r}; e.g. 0.1")
        if isinstance(updates_per_step, bool) or not isinstance(updates_per_step, int) or (
            updates_per_step < 1
        ):
            raise ValueError(
                f"VolumeNorm updates_per_step must be an int >= 1, got {updates_per_step!r}; "
                "1 is right, 3 reproduces the official memory-saving code"
            )
        self.momentum, self.updates_per_step = momentum, updates_per_step
        shape = (1, 1, *size) if self.mode is VolumeNormMode.CHANNEL else (1, channels, 1, 1)
        self.register_buffer("running_mean", torch.zeros(shape))

    def _dims(self) -> tuple[int, ...]:
        return (0, 1) if self.mode is VolumeNormMode.CHANNEL else (0, 2, 3)

    def _fit(self, mean: Tensor, size: torch.Size) -> Tensor:
        """Resize a CVN mean map to ``size`` (SVN means need no resizing)."""
        if self.mode is VolumeNormMode.SPATIAL or tuple(mean.shape[-2:]) == tuple(size):
            return mean
        return F.interpolate(mean, size=tuple(size), mode="bilinear", align_corners=False)

    def forward(self, s: Tensor) -> Tensor:
        """``s - mean``: the batch mean in training, the running mean in eval."""
        if not self.training:
            return s - self._fit(self.running_mean, s.shape[-2:]).to(s.dtype)
        mean = s.mean(dim=self._dims(), keepdim=True)
        if not is_recomputing():
            with torch.no_grad():
                update = mean.detach().to(self.running_mean.dtype)
                update = self._fit(update, self.running_mean.shape[-2:]) * self.momentum
                for _ in range(self.updates_per_step):
                    self.running_mean.mul_(1.0 - self.momentum).add_(update)
        return s - mean

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode.value}, momentum={self.momentum}, "
            f"updates_per_step={self.updates_per_step}"
        )
