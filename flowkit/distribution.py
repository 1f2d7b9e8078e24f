"""A normalizing flow as a density: a bijective flow onto a simple base distribution."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .bases import check_temperature
from .core import Context, Flow, State, check_no_context, context_kwargs, state_tensors
from .errors import InverseNotAvailable

__all__ = ["NormalizingFlow", "StandardNormal"]

_LOG_2PI = math.log(2 * math.pi)

Shape = Sequence[int]


class StandardNormal(nn.Module):
    """The standard normal density on a state (a tensor or a tuple of tensors).

    Args:
        shape: the per-sample shape of the state (without the batch), or a tuple of such
            shapes for a multi-scale state. Needed only for :meth:`sample`.
    """

    def __init__(self, shape: Shape | Sequence[Shape] | None = None) -> None:
        super().__init__()
        self.shape = shape
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: State) -> Tensor:
        """``sum(-z^2/2 - log(2 pi)/2)`` over all non-batch entries, shape ``[batch]``."""
        total = 0.0
        for t in state_tensors(z):
            total = total + (-0.5 * (t.square() + _LOG_2PI)).flatten(1).sum(1)
        return total

    def sample(self, n: int, temperature: float = 1.0) -> State:
        """``n`` samples of the configured shape, scaled by ``temperature``, on this module's
        device."""
        if self.shape is None:
            raise ValueError(
                "StandardNormal() has no shape to sample: build it with the latent shape, e.g. "
                "NormalizingFlow(flow, StandardNormal((C, H, W)))"
            )
        anchor, temperature = self._device_anchor, check_temperature(temperature)
        if all(isinstance(s, int) for s in self.shape):
            return temperature * torch.randn(n, *self.shape, device=anchor.device)
        return tuple(temperature * torch.randn(n, *s, device=anchor.device) for s in self.shape)


class NormalizingFlow(nn.Module):
    """``log p(x) = log p_base(f(x)) + log|det df/dx|``; sampling by ``f^-1(z)``.

    Args:
        flow: a bijective :class:`flowkit.Flow` (an injective one has no density).
        base: the base density, a module with ``log_prob(z)`` and ``sample(n)``; a shapeless
            :class:`StandardNormal` by default (enough for ``log_prob``).

    Example:
        >>> import torch, flowkit
        >>> model = flowkit.NormalizingFlow(flowkit.layers.ActNorm(3),
        ...                                 flowkit.StandardNormal((3, 4, 4)))
        >>> model.log_prob(torch.randn(5, 3, 4, 4)).shape
        torch.Size([5])
        >>> model.sample(2).shape
        torch.Size([2, 3, 4, 4])
    """

    def __init__(self, flow: Flow, base: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise InverseNotAvailable(
                f"NormalizingFlow needs a flowkit.Flow, got {type(flow).__name__}"
            )
        if not flow.bijective:
            raise InverseNotAvailable(
                f"{type(flow).__name__} is not bijective (it contains an InjectiveFlow such as "
                "a Laplacian pyramid), so it defines no density; use it as a feature map instead"
            )
        self.flow = flow
        self.base = StandardNormal() if base is None else base

    def log_prob(self, x: State, context: Context = None) -> Tensor:
        """Log-density of each sample, shape ``[batch]`` (conditional on ``context``)."""
        self._check_context(context)
        z, logdet = self.flow(x, **context_kwargs(self.flow, context))
        return self.base.log_prob(z, **context_kwargs(self.base, context)) + logdet

    def forward(self, x: State, context: Context = None) -> Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x, context)

    @torch.no_grad()
    def sample(self, n: int, context: Context = None, temperature: float = 1.0) -> State:
        """``n`` samples: base samples mapped through the inverse flow (given ``context``,
        whose batch size must be ``n``), drawn at ``temperature`` (see :meth:`rsample`)."""
        return self.rsample(n, context, temperature)

    def _check_context(self, context: Context) -> None:
        """Refuse a context that neither the flow nor the base would read."""
        if not getattr(self.base, "conditional", False):
            check_no_context(self.flow, context)

    def _base_sample(self, n: int, context: Context, temperature: float) -> State:
        self._check_context(context)
        kwargs = context_kwargs(self.base, context)
        if temperature != 1.0:  # custom bases without the keyword keep working at 1
            kwargs["temperature"] = check_temperature(temperature)
        return self.base.sample(n, **kwargs)

    def rsample(self, n: int, context: Context = None, temperature: float = 1.0) -> State:
        """``n`` samples with gradients: ``f^-1(z)`` with ``z`` drawn from the base.

        Reparametrized: the samples are differentiable functions of the flow's (and a
        learnable base's) parameters, for reverse-KL or variational objectives. The base
        draws ``z`` at ``temperature`` (its standard deviation scaled by it; Glow's
        "temperature", < 1 gives samples nearer the mode).
        """
        z = self._base_sample(n, context, temperature)
        return self.flow.inverse(z, **context_kwargs(self.flow, context))

    def sample_and_log_prob(
        self, n: int, context: Context = None, temperature: float = 1.0
    ) -> tuple[State, Tensor]:
        """Reparametrized samples and their log-density under the model, in one pass.

        ``log p(x) = log p_base(z) - log|det dx/dz|`` from the inverse's own log-determinant,
        so no forward pass is needed. With ``temperature != 1`` the samples come from the
        tempered base but ``log p`` is the model's (untempered) density at them.

        Returns:
            ``(x, log_prob)``, ``log_prob`` of shape ``[n]``.
        """
        z = self._base_sample(n, context, temperature)
        x, logdet_inverse = self.flow.inverse_and_logdet(z, **context_kwargs(self.flow, context))
        return x, self.base.log_prob(z, **context_kwargs(self.base, context)) - logdet_inverse
