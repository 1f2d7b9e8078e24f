"""Learnable base densities for :class:`flowkit.NormalizingFlow`: diagonal Gaussians, plain
and conditional (their mean and scale computed from a context, as Glow's split prior)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .errors import FlowInputError

__all__ = [
    "ConditionalDiagonalGaussian",
    "DiagonalGaussian",
    "check_temperature",
    "diagonal_gaussian_log_prob",
]

_LOG_2PI = math.log(2 * math.pi)


def diagonal_gaussian_log_prob(z: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """``log N(z; mean, diag(exp(log_std))^2)`` summed over all non-batch dims, shape ``[B]``."""
    standardized = (z - mean) * torch.exp(-log_std)
    return (-0.5 * (standardized.square() + _LOG_2PI) - log_std).flatten(1).sum(1)


def check_temperature(temperature: float) -> float:
    if not temperature > 0:
        raise ValueError(
            f"temperature must be > 0 (1: the model itself; < 1: samples nearer the mode), "
            f"got {temperature!r}"
        )
    return float(temperature)


class DiagonalGaussian(nn.Module):
    """A Gaussian with a learnable mean and per-entry log standard deviation.

    Both parameters have the per-sample shape of the latent (e.g. ``(C, H, W)`` or ``(D,)``)
    and start at the standard normal. Sampling is reparametrized (``mean + std * eps``), so
    gradients reach the parameters when autograd records.

    Args:
        shape: the per-sample latent shape, without the batch.
        learnable: whether mean and log-std are trained (``False``: fixed buffers).

    Example:
        >>> import torch
        >>> base = DiagonalGaussian((3,))
        >>> base.log_prob(torch.zeros(2, 3)).shape
        torch.Size([2])
        >>> base.sample(4, temperature=0.5).shape
        torch.Size([4, 3])
    """

    conditional = False

    def __init__(self, shape: Sequence[int], learnable: bool = True) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"DiagonalGaussian needs a non-empty positive shape, got {shape!r}")
        mean, log_std = torch.zeros(self.shape), torch.zeros(self.shape)
        if learnable:
            self.mean, self.log_std = nn.Parameter(mean), nn.Parameter(log_std)
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_std", log_std)

    def _check(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or tuple(z.shape[1:]) != self.shape:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise FlowInputError(
                f"DiagonalGaussian{self.shape} got a latent of shape {got}; build it with the "
                "per-sample shape of the flow's output"
            )
        return z

    def log_prob(self, z: Tensor) -> Tensor:
        """Log-density of each sample ``[B, *shape]``, shape ``[B]``."""
        z = self._check(z)
        return diagonal_gaussian_log_prob(z, self.mean.to(z.dtype), self.log_std.to(z.dtype))

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples ``mean + temperature * std * eps`` (reparametrized), ``[n, *shape]``."""
        scale = check_temperature(temperature) * self.log_std.exp()
        return self.mean + scale * torch.randn(n, *self.shape, device=self.mean.device)


class ConditionalDiagonalGaussian(nn.Module):
    """A Gaussian whose mean and log-std a network computes from a context (Glow's split prior).

    ``net(context)`` must return ``[B, 2 * shape[0], *shape[1:]]``: the means of the
    ``shape[0]`` channels first, then their log standard deviations. Zero-initialize its last
    layer to start at the standard normal. With a ``conditional = True`` attribute,
    :class:`flowkit.NormalizingFlow` passes its ``context`` to this base.

    Args:
        shape: the per-sample latent shape ``(C, *spatial)``.
        net: maps a context ``[B, ...]`` to ``[B, 2 * C, *spatial]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> base = ConditionalDiagonalGaussian((2,), nn.Linear(5, 4))
        >>> context = torch.randn(3, 5)
        >>> base.log_prob(torch.zeros(3, 2), context).shape
        torch.Size([3])
        >>> base.sample(3, context).shape
        torch.Size([3, 2])

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        arXiv:1807.03039 (the learned prior of the split-off latents).
    """

    conditional = True

    def __init__(self, shape: Sequence[int], net: nn.Module) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(
                f"ConditionalDiagonalGaussian needs a non-empty positive shape, got {shape!r}"
            )
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be an nn.Module, got {type(net).__name__}")
        self.net = net

    def parameters_for(self, context: Tensor | None) -> tuple[Tensor, Tensor]:
        """The mean and log-std ``[B, *shape]`` for a context."""
        if not isinstance(context, Tensor):
            raise FlowInputError(
                "ConditionalDiagonalGaussian needs context= a Tensor (it computes the mean and "
                f"scale from it), got {type(context).__name__}"
            )
        h = self.net(context)
        expected = (context.shape[0], 2 * self.shape[0], *self.shape[1:])
        if tuple(h.shape) != expected:
            raise ValueError(
                f"ConditionalDiagonalGaussian's net maps a context {tuple(context.shape)} to "
                f"{tuple(h.shape)}, expected {expected} (means, then log-stds, along dim 1)"
            )
        mean, log_std = h.chunk(2, dim=1)
        return mean, log_std

    def log_prob(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """Log-density of each sample given its context, shape ``[B]``."""
        mean, log_std = self.parameters_for(context)
        if tuple(z.shape) != tuple(mean.shape):
            raise FlowInputError(
                f"ConditionalDiagonalGaussian{self.shape} got a latent of shape "
                f"{tuple(z.shape)} for a context of batch {context.shape[0]}; expected "
                f"{tuple(mean.shape)}"
            )
        return diagonal_gaussian_log_prob(z, mean.to(z.dtype), log_std.to(z.dtype))

    def sample(
        self, n: int, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """One reparametrized sample per context row (``n`` must equal the context batch)."""
        mean, log_std = self.parameters_for(context)
        if n != mean.shape[0]:
            raise ValueError(
                f"sample(n={n}) got a context of batch {mean.shape[0]}: one sample per context "
                "row, so pass n equal to the context batch size"
            )
        scale = check_temperature(temperature) * log_std.exp()
        return mean + scale * torch.randn_like(mean)
