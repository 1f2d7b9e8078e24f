"""PyramidFlow's scale-wise pyramid coupling: one level of a multi-scale state transformed,
conditioned on its neighbouring levels.

A state is a tuple of levels, finest first, each ``[B, C, H_k, W_k]`` with ``H_k = H_0 / 2^k``.
A block picks a *target* level and a *condition* built from other levels (which it leaves
unchanged), computes ``(s_raw, t) = subnet(condition)``, and maps the target by

    ``s = volume_norm(soft_clamp(s_raw))``,  ``z = exp(s) * x_target + t``,
    ``y_target = W z`` (a volume-normalized LU 1x1 conv, ``|det W| = 1``).

``logdet = sum(s)`` per sample. Three kinds (``level`` = ``i``):

- ``up``: target ``i``, condition nearest-upsampled level ``i+1``;
- ``down``: target ``i+1``, condition level ``i`` at full resolution; ``s`` and ``t`` are the
  nearest-downsampled (every second pixel) full-resolution maps. With CVN (a per-pixel mean) the
  subnet's last conv runs at stride 2, the same numbers 4x cheaper; with SVN (a per-channel mean)
  training mode normalizes ``s`` at full resolution, then subsamples, as the official code does
  (the mean over the subsampled grid differs), so the last conv runs at stride 1.
- ``dual``: target ``i+1``, condition ``concat(nearest-down(level i), nearest-up(level i+2))``.

References:
    Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using Pyramid
    Normalizing Flow", CVPR 2023, arXiv:2303.02595 (Figure 3 (c), (d)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import Flow, Rebuilt, State, recomputing, state_tensors
from ..kernels.choice import Choice
from ..kernels.soft_clamp import SOFT_CLAMP_SCALE, ClampFn, soft_clamp
from ..validation import check_tuple
from .conv1x1 import InvConv1x1
from .subnet import ConvSubnet
from .volume_norm import VolumeNorm, VolumeNormMode

__all__ = ["PyramidCoupling", "PyramidCouplingKind"]


class PyramidCouplingKind(Choice):
    """Which level a :class:`PyramidCoupling` transforms, and from which neighbours."""

    UP = "up"
    DOWN = "down"
    DUAL = "dual"


class PyramidCoupling(Flow):
    """One scale-wise pyramid coupling block on a tuple of ``levels`` maps (see the module doc).

    Args:
        kind: ``"up"``, ``"down"`` or ``"dual"``.
        level: the block's first level ``i``.
        levels: the number of levels of the state.
        channels: channels ``C`` of every level.
        kernel_size: kernel of the subnet's two convolutions (7 in the paper).
        clamp: soft-clamp bound of the log-scales (``clamp * 2/pi * atan(s/clamp)``).
        volume_norm: ``"channel"`` (CVN) or ``"spatial"`` (SVN).
        target_size: ``(H, W)`` of the target level at the training resolution (sizes the CVN
            running mean; other sizes resize it).
        clamp_scale: the soft clamp's ``2/pi`` (``SOFT_CLAMP_SCALE``); another value only to
            reproduce code that rounds it.
        norm_updates: running-mean updates per training step (see :class:`VolumeNorm`).

    Raises:
        ValueError: if ``level`` does not fit ``levels`` or ``clamp_scale`` is not in ``(0, 1]``.

    Example:
        >>> import torch
        >>> block = PyramidCoupling("dual", level=0, levels=3, channels=2, kernel_size=3)
        >>> x = (torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2))
        >>> [t.shape[-1] for t in block(x)[0]]
        [8, 4, 2]
    """

    def __init__(
        self,
        kind: PyramidCouplingKind | str,
        level: int,
        levels: int,
        channels: int,
        kernel_size: int = 7,
        clamp: float = 2.0,
        volume_norm: VolumeNormMode | str = VolumeNormMode.CHANNEL,
        target_size: tuple[int, int] = (1, 1),
        clamp_scale: float = SOFT_CLAMP_SCALE,
        norm_updates: int = 1,
    ) -> None:
        super().__init__()
        self.kind = PyramidCouplingKind(kind)
        span = 2 if self.kind is PyramidCouplingKind.DUAL else 1
        if not 0 <= level < levels - span:
            raise ValueError(
                f"a '{self.kind.value}' block at level {level} needs levels {level}.."
                f"{level + span}, but the state has {levels} levels (0..{levels - 1})"
            )
        if not 0.0 < clamp_scale <= 1.0:
            raise ValueError(
                f"clamp_scale must be in (0, 1], got {clamp_scale!r}; keep the default 2/pi"
            )
        self.level, self.levels, self.clamp = level, levels, float(clamp)
        self.clamp_scale = float(clamp_scale)
        self.target = level if self.kind is PyramidCouplingKind.UP else level + 1
        dual = self.kind is PyramidCouplingKind.DUAL
        self.norm = VolumeNorm(volume_norm, channels, size=target_size,
                               updates_per_step=norm_updates)
        # A 'down' block normalizing per channel (SVN) needs the full-resolution log-scales.
        self.full_resolution = (
            self.kind is PyramidCouplingKind.DOWN and self.norm.mode is VolumeNormMode.SPATIAL
        )
        stride = 2 if self.kind is PyramidCouplingKind.DOWN and not self.full_resolution else 1
        self.subnet = ConvSubnet(
            (2 if dual else 1) * channels, 2 * channels, hidden=2 * channels,
            kernel_size=kernel_size, bias=False, negative_slope=0.01, last_stride=stride,
        )
        self.mix = InvConv1x1(channels, volume_norm=True)

    def _condition(self, levels: tuple[Tensor, ...]) -> Tensor:
        size = levels[self.target].shape[-2:]
        if self.kind is PyramidCouplingKind.UP:
            return F.interpolate(levels[self.level + 1], size=size, mode="nearest")
        if self.kind is PyramidCouplingKind.DOWN:
            return levels[self.level]
        finer = F.interpolate(levels[self.level], size=size, mode="nearest")
        coarser = F.interpolate(levels[self.level + 2], size=size, mode="nearest")
        return torch.cat([finer, coarser], dim=1)

    def _scale_shift(self, levels: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        h = self.subnet(self._condition(levels)).to(levels[self.target].dtype)
        s_raw, t = h.chunk(2, dim=1)
        s = self.norm(soft_clamp(s_raw, self.clamp, ClampFn.ATAN, self.clamp_scale))
        if self.full_resolution:  # normalized at full resolution, then subsampled
            size = levels[self.target].shape[-2:]
            s, t = (F.interpolate(m, size=size, mode="nearest") for m in (s, t))
        return s, t

    def _levels(self, x: State) -> tuple[Tensor, ...]:
        return check_tuple(self, x, self.levels)

    def _replace(self, levels: tuple[Tensor, ...], new: Tensor) -> tuple[Tensor, ...]:
        return levels[: self.target] + (new,) + levels[self.target + 1 :]

    def forward(self, x: State) -> tuple[State, Tensor]:
        """Transform the target level; the others pass unchanged."""
        levels = self._levels(x)
        s, t = self._scale_shift(levels)
        y, mix_logdet = self.mix(levels[self.target] * s.exp() + t)
        return self._replace(levels, y), s.flatten(1).sum(1) + mix_logdet

    def inverse_and_logdet(self, y: State) -> tuple[State, Tensor]:
        """Undo the mixing, then the affine map (its parameters come from unchanged levels)."""
        levels = self._levels(y)
        s, t = self._scale_shift(levels)
        z, mix_logdet = self.mix.inverse_and_logdet(levels[self.target])
        return self._replace(levels, (z - t) * (-s).exp()), mix_logdet - s.flatten(1).sum(1)

    def rebuild(self, y: State) -> Rebuilt:
        """Invert and replay with one subnet evaluation (see :meth:`flowkit.Flow.rebuild`)."""
        levels = tuple(t.detach().requires_grad_() for t in self._levels(y))
        with torch.enable_grad(), recomputing():
            s, t = self._scale_shift(levels)
        with torch.no_grad():
            z = self.mix.inverse(levels[self.target])
            target = ((z - t) * (-s).exp()).requires_grad_()
        leaves = self._replace(levels, target)
        with torch.enable_grad(), recomputing():
            out, mix_logdet = self.mix(target * s.exp() + t)
            logdet = s.flatten(1).sum(1) + mix_logdet
        inputs = tuple(t.detach() for t in state_tensors(leaves))
        return Rebuilt(inputs, self._replace(levels, out), logdet, leaves)
