"""The Glow/RealNVP multi-scale architecture: squeeze, K flow steps, split half off, repeat.

Glow's split gives the factored-out half ``z_i`` a learned prior ``N(mu(h_i), sigma(h_i))``
conditioned on the kept half ``h_i``. That prior is the same density as a standard normal on
``(z_i - mu(h_i)) / sigma(h_i)``: an affine coupling with ``h_i`` passive and ``z_i`` active,
placed just before the split (its soft clamp bounds ``|log sigma|`` by ``clamp``, where Glow's
prior leaves it free). So :class:`MultiScaleFlow` is an ordinary bijective
:class:`~flowkit.Flow` onto a multi-scale state with a standard-normal base, and every flowkit
tool (``check_flow``, memory saving, conditioning) applies to it unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .compose import Sequential
from .core import Context, Flow, State, context_kwargs, zero_logdet
from .errors import FlowInputError
from .kernels.choice import Choice
from .layers.actnorm import ActNorm
from .layers.conv1x1 import InvConv1x1
from .layers.coupling import AffineCoupling
from .layers.spline import RQSplineCoupling
from .layers.squeeze import Squeeze
from .layers.subnet import ConvSubnet
from .validation import check_tuple

__all__ = ["GlowCoupling", "MultiScaleFlow", "glow"]


class GlowCoupling(Choice):
    """The coupling of each :func:`glow` step."""

    AFFINE = "affine"  # Glow's
    SPLINE = "spline"  # a rational-quadratic spline (Durkan et al., arXiv:1906.04032)


class MultiScaleFlow(Flow):
    """Levels of flows with half of the channels factored out after each but the last.

    ``forward(x)`` runs level 0 on ``x``; after each level but the last, the first
    ``ceil(C/2)`` channels are kept for the next level and the last ``floor(C/2)`` leave as a
    latent. The output is the tuple of latents, finest first, the last level's whole output
    last: ``(z_0, ..., z_{L-1})``; ``logdet`` adds up over the levels. ``inverse`` takes such
    a tuple. Pair it with ``StandardNormal(flow.latent_shapes(input_shape))``.

    Args:
        levels: one flow per level (e.g. a ``Sequential`` starting with a ``Squeeze``).

    Raises:
        FlowInputError: if a latent tuple of the wrong length is inverted, or a level's output
            has fewer than 2 channels to split.
    """

    def __init__(self, *levels: Flow) -> None:
        super().__init__()
        if not levels:
            raise ValueError("MultiScaleFlow needs at least one level")
        for index, level in enumerate(levels):
            if not isinstance(level, Flow):
                raise TypeError(
                    f"MultiScaleFlow level {index} is a {type(level).__name__}, not a "
                    "flowkit.Flow; wrap its layers in flowkit.Sequential(...)"
                )
        self.levels = nn.ModuleList(levels)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(getattr(level, "conditional", False) for level in self.levels)

    @staticmethod
    def _kept(channels: int, name: str) -> int:
        if channels < 2:
            raise FlowInputError(
                f"MultiScaleFlow cannot split a level output of {channels} channel(s) ({name}); "
                "put a Squeeze at the start of the level"
            )
        return (channels + 1) // 2

    def forward(self, x: State, context: Context = None) -> tuple[tuple[Tensor, ...], Tensor]:
        """``x -> (z_0, ..., z_{L-1})`` and the summed logdet."""
        latents, logdet = [], zero_logdet(x)
        h = x
        for index, level in enumerate(self.levels):
            h, level_logdet = level(h, **context_kwargs(level, context))
            logdet = logdet + level_logdet
            if index < len(self.levels) - 1:
                kept = self._kept(h.shape[1], f"level {index}")
                latents.append(h[:, kept:])
                h = h[:, :kept]
        latents.append(h)
        return tuple(latents), logdet

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[Tensor, Tensor]:
        """``(z_0, ..., z_{L-1}) -> x`` and the inverse's logdet."""
        latents = check_tuple(self, y, len(self.levels))
        h, logdet = latents[-1], zero_logdet(latents[-1])
        for index in reversed(range(len(self.levels))):
            if index < len(self.levels) - 1:
                h = torch.cat([h, latents[index]], dim=1)
            level = self.levels[index]
            h, level_logdet = level.inverse_and_logdet(h, **context_kwargs(level, context))
            logdet = logdet + level_logdet
        return h, logdet

    def latent_shapes(
        self, shape: Sequence[int], context: Context = None
    ) -> tuple[tuple[int, ...], ...]:
        """The per-sample shapes of the latents for an input of per-sample ``shape``.

        Runs a zero input through the levels in eval mode without recording (no side
        effects); a conditional flow needs a ``context`` of batch 1.
        """
        parameter = next(self.parameters(), None)
        probe = torch.zeros(1, *shape, device=parameter.device if parameter is not None else None)
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                latents, _ = self(probe, **context_kwargs(self, context))
        finally:
            self.train(training)
        return tuple(tuple(z.shape[1:]) for z in latents)


def _coupling(kind: GlowCoupling, channels: int, hidden: int, kernel_size: int, clamp: float,
              context_channels: int) -> Flow:
    def subnet(c_in: int, c_out: int) -> nn.Module:
        return ConvSubnet(c_in, c_out, hidden=hidden, kernel_size=kernel_size)

    if kind is GlowCoupling.SPLINE:
        return RQSplineCoupling(channels, subnet, context_channels=context_channels)
    return AffineCoupling(channels, subnet, clamp=clamp, context_channels=context_channels)


def glow(
    in_channels: int,
    levels: int = 3,
    steps: int = 4,
    hidden: int = 64,
    kernel_size: int = 3,
    clamp: float = 2.0,
    memory_saving: bool = False,
    context_channels: int = 0,
    coupling: GlowCoupling | str = GlowCoupling.AFFINE,
) -> MultiScaleFlow:
    """A Glow/RealNVP multi-scale flow with sane defaults.

    Per level: ``Squeeze(2)``, then ``steps`` x (``ActNorm``, ``InvConv1x1``,
    ``AffineCoupling`` with a ``ConvSubnet``), then, except at the last level, the learned
    prior of the split (an affine coupling of the leaving half on the kept half, zero-init so
    it starts as ``N(0, 1)``); half the channels then leave as a latent. An input
    ``[B, C, H, W]`` needs ``H`` and ``W`` divisible by ``2**levels``. Base density:
    ``StandardNormal(flow.latent_shapes((C, H, W)))``.

    Args:
        in_channels: channels of the input image.
        levels: number of scales ``L``.
        steps: flow steps ``K`` per level.
        hidden: hidden channels of the coupling subnets.
        kernel_size: odd kernel size of the subnets' convolutions.
        clamp: the soft clamp of the coupling log-scales.
        memory_saving: run each level with the memory-saving engine (activations rebuilt
            in backward; the latents, which are outputs, are kept).
        context_channels: channels of a vector context ``[B, Cc]`` given to every coupling
            (0: unconditional).
        coupling: ``"affine"`` (Glow) or ``"spline"`` (:class:`~flowkit.layers.RQSplineCoupling`
            with its defaults) for the flow steps; the split prior stays affine.

    Returns:
        A :class:`MultiScaleFlow` mapping ``[B, C, H, W]`` to ``L`` latents, finest first.

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.glow(1, levels=2, steps=2, hidden=16)
        >>> flow.latent_shapes((1, 8, 8))
        ((2, 4, 4), (8, 2, 2))
        >>> base = flowkit.StandardNormal(flow.latent_shapes((1, 8, 8)))
        >>> model = flowkit.NormalizingFlow(flow, base)
        >>> model.log_prob(torch.rand(3, 1, 8, 8)).shape
        torch.Size([3])

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions",
        arXiv:1807.03039; Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803.
    """
    if levels < 1 or steps < 1:
        raise ValueError(f"glow needs levels >= 1 and steps >= 1, got {levels} and {steps}")
    kind = GlowCoupling(coupling)
    sizes = (hidden, kernel_size, clamp, context_channels)
    channels, built = in_channels, []
    for index in range(levels):
        channels *= 4
        blocks: list[Flow] = [Squeeze(2)]
        for _ in range(steps):
            blocks += [ActNorm(channels), InvConv1x1(channels), _coupling(kind, channels, *sizes)]
        if index < levels - 1:  # Glow's learned split prior, as an affine coupling
            blocks.append(_coupling(GlowCoupling.AFFINE, channels, *sizes))
        built.append(Sequential(*blocks, memory_saving=memory_saving))
        channels = (channels + 1) // 2
    return MultiScaleFlow(*built)
