"""Activation normalization (Glow): a per-channel affine map with a data-dependent init."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..core import Flow, State, is_recomputing
from ..validation import check_channels

__all__ = ["ActNorm"]


def _world() -> bool:
    """Whether a default process group with more than one process is initialized."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ActNorm(Flow):
    """``y = (x + bias) * exp(log_scale)`` per channel, initialized from the first batch.

    On the first forward in training mode, ``bias`` and ``log_scale`` are set so that the
    output has zero mean and unit variance per channel over that batch (exactly once: the
    ``is_initialized`` buffer records it, a checkpoint keeps it, and a memory-saving replay
    never re-initializes). ``logdet = (prod of non-channel dims) * sum(log_scale)``.

    The init rule, safe on any batch: the statistics are computed in float64 (float32 on
    devices without it), whatever the input dtype; a channel whose standard deviation is at
    most ``eps`` times the largest ``|value|`` of the batch has no spread to normalize (a
    constant channel, or one value per channel) and keeps ``log_scale = 0``, only centered;
    every other channel gets ``log_scale = -log(std)``. So the scale stays finite (no 1e6 from
    a constant channel, no float16 overflow).

    Under ``torch.distributed`` (initialized, world size > 1) the init uses the *global*
    batch: counts, sums, sums of squared deviations and the peak are all-reduced over the
    default process group, so every process gets the same parameters (as DDP needs). Every
    process must then run its first training forward together, as DDP does.

    Args:
        channels: size of dim 1 of the input ``[batch, channels, *spatial]``.
        eps: the relative spread below which a channel counts as constant (see above).
        distributed_init: all-reduce the init statistics when a process group is initialized.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        arXiv:1807.03039.
    """

    def __init__(self, channels: int, eps: float = 1e-6, distributed_init: bool = True) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"ActNorm needs eps > 0, got {eps!r}")
        self.channels = channels
        self.eps = eps
        self.distributed_init = distributed_init
        self.bias = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("is_initialized", torch.tensor(False))

    def _shape(self, x: Tensor) -> tuple[int, ...]:
        return (1, self.channels) + (1,) * (x.dim() - 2)

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dtype = torch.float32 if x.device.type == "mps" else torch.float64
        flat = x.detach().transpose(0, 1).reshape(self.channels, -1).to(dtype)
        group = _world() if self.distributed_init else None
        sums = torch.cat([flat.sum(1), flat.new_tensor([flat.shape[1]])])
        peak = flat.abs().amax() if flat.numel() else flat.new_zeros(())
        if group:
            dist.all_reduce(sums)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX)
        count = sums[-1].clamp_min(1)
        mean = sums[:-1] / count
        spread = (flat - mean[:, None]).square().sum(1)
        if group:
            dist.all_reduce(spread)
        std = (spread / count).sqrt()
        constant = std <= self.eps * peak
        log_scale = torch.where(constant, torch.zeros_like(std), -std.clamp_min(1e-300).log())
        self.bias.copy_(-mean)
        self.log_scale.copy_(log_scale)
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
