"""Coupling layers (RealNVP/Glow): one channel half transformed, conditioned on the other.

The input ``[B, C, ...]`` splits into a passive half ``x1`` (the first ``ceil(C/2)`` channels),
copied to the output, and an active half ``x2`` (the last ``floor(C/2)``), transformed by
parameters that a subnet computes from ``x1``. The inverse evaluates the same subnet on
``y1 = x1``, so any subnet works. Follow a coupling with a :class:`~flowkit.layers.Permute`,
:class:`~flowkit.layers.Reverse` or :class:`~flowkit.layers.InvConv1x1` so that every channel
gets transformed.

Conditioning: built with ``context_channels = Cc > 0``, a coupling is conditional
(``conditional = True``) and its subnet sees ``concat(x1, context)`` along the channels, so it
is built as ``subnet(ceil(C/2) + Cc, ...)``. The context is an image ``[B, Cc, *spatial]`` of
the input's spatial size, or a vector ``[B, Cc]`` broadcast over the spatial dimensions (a
class embedding, say). The map stays invertible for every context: the inverse sees the same
context.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..core import Context, Flow, Rebuilt, State, check_no_context, recomputing, zero_logdet
from ..errors import FlowInputError
from ..kernels.coupling import affine_coupling_forward, affine_coupling_inverse
from ..kernels.soft_clamp import ClampFn, check_clamp
from ..validation import check_channels

__all__ = ["AdditiveCoupling", "AffineCoupling", "SubnetConstructor"]

SubnetConstructor = Callable[[int, int], nn.Module]
"""``subnet(in_channels, out_channels) -> nn.Module``, FrEIA's convention."""


class _Coupling(Flow):
    """Splitting, subnet construction and checks shared by the coupling layers."""

    #: Subnet output channels per active channel (scale and shift: 2; shift only: 1).
    params_per_channel: int

    def __init__(
        self, channels: int, subnet: SubnetConstructor, context_channels: int = 0
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"{type(self).__name__} needs at least 2 channels, got {channels}")
        if isinstance(context_channels, bool) or int(context_channels) != context_channels or (
            context_channels < 0
        ):
            raise ValueError(
                f"{type(self).__name__} needs context_channels >= 0 (0: no conditioning), got "
                f"{context_channels!r}"
            )
        self.channels = channels
        self.passive = (channels + 1) // 2
        self.active = channels // 2
        self.context_channels = int(context_channels)
        self.conditional = self.context_channels > 0
        c_in = self.passive + self.context_channels
        self.subnet = subnet(c_in, self.params_per_channel * self.active)
        if not isinstance(self.subnet, nn.Module):
            raise TypeError(
                f"subnet({c_in}, {self.params_per_channel * self.active}) must return "
                f"an nn.Module, got {type(self.subnet).__name__}"
            )

    def _split(self, x: State) -> tuple[Tensor, Tensor]:
        x = check_channels(self, x, self.channels)
        return x[:, : self.passive], x[:, self.passive :]

    def _subnet_input(self, x1: Tensor, context: Context) -> Tensor:
        """``x1``, or ``concat(x1, context)`` with a vector context broadcast over space."""
        if not self.context_channels:
            check_no_context(self, context)
            return x1
        name, n = type(self).__name__, self.context_channels
        spatial = tuple(x1.shape[2:])
        expected = f"[{x1.shape[0]}, {n}, {', '.join(map(str, spatial))}] or [{x1.shape[0]}, {n}]"
        if not isinstance(context, Tensor):
            got = "no context" if context is None else f"a {type(context).__name__}"
            raise FlowInputError(
                f"{name} was built with context_channels={n} and needs context= a Tensor "
                f"{expected}, got {got}"
            )
        if context.dim() == 2 and spatial:
            context = context.view(*context.shape, *(1,) * len(spatial)).expand(
                *context.shape, *spatial
            )
        if tuple(context.shape) != (x1.shape[0], n, *spatial):
            raise FlowInputError(
                f"{name} needs a context of shape {expected} (batch, context_channels, "
                f"spatial size of the input), got {tuple(context.shape)}"
            )
        return torch.cat([x1, context.to(x1.dtype)], dim=1)

    def _params(self, x1: Tensor, active: Tensor, context: Context = None) -> Tensor:
        """The subnet's output on ``x1`` (and the context), checked against the shape needed."""
        inputs = self._subnet_input(x1, context)
        h = self.subnet(inputs)
        expected = (x1.shape[0], self.params_per_channel * self.active, *x1.shape[2:])
        if tuple(h.shape) != expected:
            raise ValueError(
                f"{type(self).__name__}'s subnet maps {tuple(inputs.shape)} to "
                f"{tuple(h.shape)}, "
                f"expected {expected}: subnet(in_ch, out_ch) must output out_ch channels and "
                "keep the spatial size (use 'same' padding)"
            )
        return h.to(active.dtype)

    def _transform(self, x2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _untransform(self, y2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, x: State, context: Context = None) -> tuple[Tensor, Tensor]:
        """``y = (x1, transform(x2; subnet(x1[, context])))``."""
        x1, x2 = self._split(x)
        y2, logdet = self._transform(x2, self._params(x1, x2, context))
        return torch.cat([x1, y2], dim=1), logdet

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[Tensor, Tensor]:
        """``x = (y1, untransform(y2; subnet(y1[, context])))``."""
        y1, y2 = self._split(y)
        x2, logdet = self._untransform(y2, self._params(y1, y2, context))
        return torch.cat([y1, x2], dim=1), logdet

    def rebuild(self, y: State, context: Context = None) -> Rebuilt:
        """Invert and replay with *one* subnet evaluation (the engine's 4-unit step).

        The subnet is evaluated with autograd recording on the passive half, which the output
        carries unchanged; its result both rebuilds the active half (without recording) and
        drives the replayed transform, so one graph serves the backward.
        """
        y1, y2 = self._split(y)
        x1 = y1.detach().requires_grad_()
        with torch.enable_grad(), recomputing():
            h = self._params(x1, y2, context)
        with torch.no_grad():
            x2, _ = self._untransform(y2, h)
        x2 = x2.requires_grad_()
        with torch.enable_grad():
            y2_replayed, logdet = self._transform(x2, h)
            outputs = torch.cat([x1, y2_replayed], dim=1)
        return Rebuilt(
            inputs=torch.cat([x1.detach(), x2.detach()], dim=1),
            outputs=outputs,
            logdet=logdet,
            leaves=(x1, x2),
            merge=lambda grads: [torch.cat(grads, dim=1)],
        )


class AffineCoupling(_Coupling):
    """Affine coupling: ``y2 = x2 * exp(s) + t`` with ``(s_raw, t) = subnet(x1)``.

    The subnet outputs ``2 * floor(C/2)`` channels: the raw log-scales first, then the shifts.
    ``s = soft_clamp(s_raw)`` bounds the scale smoothly (``clamp * 2/pi * atan(s_raw/clamp)``,
    or ``clamp * tanh(s_raw/clamp)``); ``logdet = sum(s)`` over all non-batch dims.

    Args:
        channels: channels of the input (at least 2; odd counts split ceil/floor).
        subnet: constructor ``subnet(in_channels, out_channels) -> nn.Module``.
        clamp: the bound of the log-scales.
        clamp_fn: ``"atan"`` or ``"tanh"``.
        context_channels: channels of the conditioning input (0: unconditional); see the
            module doc for the shapes a context may have.

    Example:
        >>> import torch
        >>> from flowkit.layers import AffineCoupling, ConvSubnet
        >>> layer = AffineCoupling(5, lambda c_in, c_out: ConvSubnet(c_in, c_out, hidden=16))
        >>> y, logdet = layer(torch.randn(2, 5, 8, 8))
        >>> y.shape, logdet.shape
        (torch.Size([2, 5, 8, 8]), torch.Size([2]))

    References:
        Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803.
    """

    params_per_channel = 2

    def __init__(
        self,
        channels: int,
        subnet: SubnetConstructor,
        clamp: float = 2.0,
        clamp_fn: ClampFn | str = ClampFn.ATAN,
        context_channels: int = 0,
    ) -> None:
        clamp_fn = check_clamp(clamp, clamp_fn)
        super().__init__(channels, subnet, context_channels)
        self.clamp, self.clamp_fn = float(clamp), clamp_fn

    # The fused kernel (soft clamp, exp, affine map, logdet sum in one pass) on CUDA; its
    # plain-PyTorch reference elsewhere.
    def _transform(self, x2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return affine_coupling_forward(x2, h, self.clamp, self.clamp_fn)

    def _untransform(self, y2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return affine_coupling_inverse(y2, h, self.clamp, self.clamp_fn)


class AdditiveCoupling(_Coupling):
    """Volume-preserving coupling (NICE): ``y2 = x2 + t`` with ``t = subnet(x1)``; logdet 0.

    Args:
        channels: channels of the input (at least 2; odd counts split ceil/floor).
        subnet: constructor ``subnet(in_channels, out_channels) -> nn.Module``.
        context_channels: channels of the conditioning input (0: unconditional); see the
            module doc.

    References:
        Dinh et al., "NICE: Non-linear Independent Components Estimation", arXiv:1410.8516.
    """

    params_per_channel = 1

    def _transform(self, x2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return x2 + h, zero_logdet(x2)

    def _untransform(self, y2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        return y2 - h, zero_logdet(y2)
