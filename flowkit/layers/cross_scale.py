"""CS-Flow's cross-scale coupling: every scale's channel half transformed jointly, conditioned
on the other half of all scales through a cross-convolution subnet.

A state is a tuple of ``S`` maps, finest first, ``[B, C, H_k, W_k]`` with
``H_{k+1} = ceil(H_k / 2)`` (the size a stride-2 convolution gives). Each map splits into a
first half (the first ``floor(C/2)`` channels) and a second half (the rest). One
:class:`CrossScaleCoupling` transforms the *active* half of every scale by

.. math::

    (\\hat s_k, t_k)_{k<S} = \\operatorname{CrossConv}\\big((x^{\\text{passive}}_k)_{k<S}\\big),
    \\quad s_k = c \\tfrac{2}{\\pi} \\arctan(\\hat s_k / c), \\quad
    y^{\\text{active}}_k = x^{\\text{active}}_k e^{s_k} + t_k,

leaving the passive halves unchanged, so the inverse evaluates the same subnet on the same
passive halves: ``x_active = (y_active - t) * exp(-s)``, exact. ``logdet = sum_k sum s_k`` per
sample. The official CS-Flow block is two such couplings, the first half conditioned on the
second, then the second on the new first: :class:`CrossScaleBlock`.

References:
    Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection",
    WACV 2022, arXiv:2110.02855 (Section 3.2, Figure 3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..compose import Sequential
from ..core import Flow, Rebuilt, State, recomputing, zero_logdet
from ..errors import FlowInputError
from ..kernels.choice import Choice
from ..kernels.coupling import affine_coupling_forward, affine_coupling_inverse
from ..kernels.soft_clamp import ClampFn, check_clamp
from ..validation import check_channels, check_tuple

__all__ = ["CouplingHalf", "CrossConvolutions", "CrossScaleBlock", "CrossScaleCoupling"]

UPSAMPLE_MODE = "bilinear"
"""How a coarser neighbour's hidden map is brought to the finer scale (as in the paper)."""

DOWN_STRIDE = 2
"""Stride of the convolution that brings a finer neighbour's hidden map to the coarser scale."""


def _check_positive(owner: str, **values: int) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner} needs a positive integer {name}, got {value!r}")


class CrossConvolutions(nn.Module):
    """CS-Flow's subnet: per-scale convolutions that also exchange information between scales.

    For scales ``k = 0 .. S-1`` (finest first), with ``a = LeakyReLU``:

    .. math::

        h_k = a(\\mathrm{conv}^{in}_k(x_k)), \\qquad
        o_k = \\gamma_k \\big(\\mathrm{conv}^{out}_k(h_k)
              + \\mathrm{conv}^{up}_k(\\mathrm{up}(h_{k+1}))
              + \\mathrm{conv}^{down}_k(h_{k-1})\\big),

    where ``up`` is bilinear upsampling to the size of scale ``k``, ``conv^down`` has stride 2,
    and the terms for the missing neighbours of the first and last scale are absent. The
    learnable scalars ``gamma_k`` start at zero, so a coupling driven by this subnet starts as
    the identity.

    Args:
        in_channels: channels of every scale's input.
        hidden: channels of the hidden maps (1024 in the paper).
        kernel_size: odd kernel size of every convolution (3; the paper's last block uses 5).
        scales: the number of scales ``S``.
        leaky_slope: slope of the LeakyReLU for negative inputs.
        out_channels: channels of every scale's output (default ``2 * in_channels``).

    Example:
        >>> import torch
        >>> net = CrossConvolutions(2, hidden=8, out_channels=4)
        >>> x = (torch.randn(1, 2, 8, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 2, 2))
        >>> [tuple(o.shape) for o in net(x)]
        [(1, 4, 8, 8), (1, 4, 4, 4), (1, 4, 2, 2)]

    References:
        Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect
        Detection", WACV 2022, arXiv:2110.02855.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        kernel_size: int = 3,
        scales: int = 3,
        leaky_slope: float = 0.1,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        out_channels = 2 * in_channels if out_channels is None else out_channels
        _check_positive(
            "CrossConvolutions", in_channels=in_channels, hidden=hidden, scales=scales,
            out_channels=out_channels, kernel_size=kernel_size,
        )
        if kernel_size % 2 != 1:
            raise ValueError(
                f"CrossConvolutions needs an odd kernel_size for 'same' padding, got {kernel_size}"
            )
        self.scales, self.out_channels, self.leaky_slope = scales, out_channels, leaky_slope
        pad = kernel_size // 2

        def conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=pad)

        self.conv_in = nn.ModuleList(conv(in_channels, hidden) for _ in range(scales))
        self.conv_out = nn.ModuleList(conv(hidden, out_channels) for _ in range(scales))
        # up[k]: from scale k+1 to scale k; down[k]: from scale k to scale k+1
        self.conv_up = nn.ModuleList(conv(hidden, out_channels) for _ in range(scales - 1))
        self.conv_down = nn.ModuleList(
            conv(hidden, out_channels, DOWN_STRIDE) for _ in range(scales - 1)
        )
        self.gammas = nn.Parameter(torch.zeros(scales))

    def _check(self, x: Sequence[Tensor]) -> None:
        for k in range(1, len(x)):
            fine, coarse = tuple(x[k - 1].shape[-2:]), tuple(x[k].shape[-2:])
            expected = tuple(-(-n // DOWN_STRIDE) for n in fine)
            if coarse != expected:
                raise FlowInputError(
                    f"CrossConvolutions: scale {k} is {coarse[0]}x{coarse[1]} but scale {k - 1} "
                    f"is {fine[0]}x{fine[1]}; each scale must be half the size of the one before "
                    f"(rounded up), i.e. {expected[0]}x{expected[1]}"
                )

    def forward(self, x: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """Map the ``S`` inputs ``[B, in_channels, H_k, W_k]`` to ``[B, out_channels, H_k, W_k]``.

        Args:
            x: one tensor per scale, finest first, each half the size of the one before.

        Returns:
            One tensor per scale with ``out_channels`` channels and the input's spatial size.
        """
        if len(x) != self.scales:
            raise ValueError(
                f"CrossConvolutions was built for {self.scales} scales, got {len(x)} tensors"
            )
        self._check(x)
        hidden = [
            F.leaky_relu(conv(t), self.leaky_slope)
            for conv, t in zip(self.conv_in, x, strict=True)
        ]
        outputs = []
        for k, (conv, h) in enumerate(zip(self.conv_out, hidden, strict=True)):
            out = conv(h)
            if k + 1 < self.scales:
                coarser = F.interpolate(
                    hidden[k + 1], size=h.shape[-2:], mode=UPSAMPLE_MODE, align_corners=False
                )
                out = out + self.conv_up[k](coarser)
            if k > 0:
                out = out + self.conv_down[k - 1](hidden[k - 1])
            outputs.append(out * self.gammas[k])
        return tuple(outputs)


class CouplingHalf(Choice):
    """Which channel half of every scale a :class:`CrossScaleCoupling` transforms."""

    FIRST = "first"  # the first floor(C/2) channels, conditioned on the rest
    SECOND = "second"  # the last ceil(C/2) channels, conditioned on the first


class CrossScaleCoupling(Flow):
    """Affine coupling of one channel half of every scale, from the other half of all scales.

    See the module doc for the map. The subnet is a :class:`CrossConvolutions` with zero
    gammas, so the layer starts as the identity; the soft clamp and the affine epilogue are
    :func:`flowkit.kernels.coupling.affine_coupling_forward` (the fused kernel on CUDA).

    Args:
        channels: channels ``C`` of every scale (at least 2).
        hidden: hidden channels of the subnet (1024 in the paper).
        kernel_size: kernel size of the subnet's convolutions.
        clamp: soft-clamp bound of the log-scales (3 in the paper).
        scales: number of scales of the state.
        active: ``"first"`` transforms the first ``floor(C/2)`` channels of every scale,
            ``"second"`` the others.
        leaky_slope: the subnet's LeakyReLU slope.

    Example:
        >>> import torch
        >>> layer = CrossScaleCoupling(4, hidden=8)
        >>> x = (torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 4, 2, 2))
        >>> y, logdet = layer(x)
        >>> logdet.shape, all(torch.equal(a, b) for a, b in zip(x, y))  # gammas start at 0
        (torch.Size([2]), True)

    References:
        Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect
        Detection", WACV 2022, arXiv:2110.02855.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 1024,
        kernel_size: int = 3,
        clamp: float = 3.0,
        scales: int = 3,
        active: CouplingHalf | str = CouplingHalf.FIRST,
        leaky_slope: float = 0.1,
    ) -> None:
        super().__init__()
        check_clamp(clamp, ClampFn.ATAN)
        _check_positive("CrossScaleCoupling", channels=channels, scales=scales)
        if channels < 2:
            raise ValueError(f"CrossScaleCoupling needs at least 2 channels, got {channels}")
        self.channels, self.scales, self.clamp = channels, scales, float(clamp)
        self.active = CouplingHalf(active)
        first = channels // 2
        self.first_active = self.active is CouplingHalf.FIRST
        n_active = first if self.first_active else channels - first
        self.split = first
        self.subnet = CrossConvolutions(
            channels - n_active, hidden, kernel_size, scales, leaky_slope,
            out_channels=2 * n_active,
        )

    def _parts(self, x: State) -> tuple[list[Tensor], list[Tensor]]:
        """The passive and active halves of every scale."""
        passive, active = [], []
        for t in check_tuple(self, x, self.scales):
            t = check_channels(self, t, self.channels)
            first, second = t[:, : self.split], t[:, self.split :]
            passive.append(second if self.first_active else first)
            active.append(first if self.first_active else second)
        return passive, active

    def _join(self, passive: Sequence[Tensor], active: Sequence[Tensor]) -> tuple[Tensor, ...]:
        pairs = zip(active, passive, strict=True) if self.first_active else zip(
            passive, active, strict=True)
        return tuple(torch.cat(pair, dim=1) for pair in pairs)

    def _params(self, passive: Sequence[Tensor], like: Tensor) -> tuple[Tensor, ...]:
        return tuple(h.to(like.dtype) for h in self.subnet(passive))

    def _affine(
        self, active: Sequence[Tensor], params: Sequence[Tensor], inverse: bool
    ) -> tuple[list[Tensor], Tensor]:
        op = affine_coupling_inverse if inverse else affine_coupling_forward
        outputs, logdet = [], zero_logdet(active[0])
        for u, h in zip(active, params, strict=True):
            v, part = op(u, h, self.clamp, ClampFn.ATAN)
            outputs.append(v)
            logdet = logdet + part
        return outputs, logdet

    def forward(self, x: State) -> tuple[State, Tensor]:
        """Transform the active halves; the passive halves pass unchanged."""
        passive, active = self._parts(x)
        y, logdet = self._affine(active, self._params(passive, active[0]), inverse=False)
        return self._join(passive, y), logdet

    def inverse_and_logdet(self, y: State) -> tuple[State, Tensor]:
        """Undo the affine map with the subnet evaluated on the unchanged passive halves."""
        passive, active = self._parts(y)
        x, logdet = self._affine(active, self._params(passive, active[0]), inverse=True)
        return self._join(passive, x), logdet

    def rebuild(self, y: State) -> Rebuilt:
        """Invert and replay with *one* subnet evaluation (see :meth:`flowkit.Flow.rebuild`).

        The subnet runs once, recording, on leaf copies of the passive halves (which the
        output carries unchanged); its result rebuilds the active halves without recording and
        drives the replayed transform, so one graph serves the backward.
        """
        passive, active = self._parts(y)
        passive = [t.detach().requires_grad_() for t in passive]
        with torch.enable_grad(), recomputing():
            params = self._params(passive, active[0])
        with torch.no_grad():
            x_active, _ = self._affine(active, params, inverse=True)
        x_active = [t.requires_grad_() for t in x_active]
        with torch.enable_grad():
            y_active, logdet = self._affine(x_active, params, inverse=False)
            outputs = self._join(passive, y_active)
        n = self.scales

        def merge(grads: list[Tensor]) -> list[Tensor]:
            return list(self._join(grads[:n], grads[n:]))

        return Rebuilt(
            inputs=self._join([t.detach() for t in passive], [t.detach() for t in x_active]),
            outputs=outputs,
            logdet=logdet,
            leaves=(*passive, *x_active),
            merge=merge,
        )


class CrossScaleBlock(Sequential):
    """The official CS-Flow coupling block: two :class:`CrossScaleCoupling`, halves alternating.

    First the first half of every scale is transformed, conditioned on the second half of all
    scales; then the second half, conditioned on the *new* first half (the official
    ``parallel_glow_coupling_layer``). Each coupling has its own subnet.

    As a :class:`flowkit.Sequential` of the two couplings it iterates over them; inside a
    memory-saving flow the engine walks it coupling by coupling (nested or unpacked alike), so
    each coupling's fused :meth:`~CrossScaleCoupling.rebuild` serves the backward.

    Args:
        channels: channels ``C`` of every scale (at least 2).
        hidden: hidden channels of both subnets.
        kernel_size: kernel size of the subnets' convolutions.
        clamp: soft-clamp bound of the log-scales.
        scales: number of scales of the state.
        leaky_slope: the subnets' LeakyReLU slope.

    Example:
        >>> import torch
        >>> block = CrossScaleBlock(4, hidden=8, scales=2)
        >>> [layer.active.value for layer in block]
        ['first', 'second']

    References:
        Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect
        Detection", WACV 2022, arXiv:2110.02855.
    """

    def __init__(
        self,
        channels: int,
        hidden: int = 1024,
        kernel_size: int = 3,
        clamp: float = 3.0,
        scales: int = 3,
        leaky_slope: float = 0.1,
    ) -> None:
        super().__init__(*(
            CrossScaleCoupling(channels, hidden, kernel_size, clamp, scales, half, leaky_slope)
            for half in CouplingHalf
        ))
