"""Reversible residual blocks (RevNet) around any two networks: invertible, volume-preserving.

``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``, inverted by ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``
whatever ``F`` and ``G`` are. A stack of these blocks in a
``flowkit.Sequential(..., memory_saving=True)`` trains a reversible ResNet (or U-Net stage, or
transformer stack) without keeping activations.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core import (
    Context,
    Flow,
    Rebuilt,
    State,
    check_no_context,
    context_tensors,
    recomputing,
    restart_replay_rng,
    zero_logdet,
)
from ..errors import FlowInputError
from ..validation import check_channels

__all__ = ["RevNetBlock"]


class RevNetBlock(Flow):
    """A reversible residual block: ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``; logdet 0.

    The input ``[B, C, *spatial]`` (or ``[B, C]``) splits along dim 1 into ``x1``, the first
    ``ceil(C/2)`` channels, and ``x2``, the last ``floor(C/2)``. ``F`` maps ``x2``'s channels to
    ``x1``'s and ``G`` maps ``x1``'s to ``x2``'s, keeping every other dimension. ``F`` and ``G``
    are arbitrary ``nn.Module``s, never inverted. The block is two additive couplings, so its
    Jacobian is unit-triangular twice over: ``log|det J| = 0`` exactly, and it is a valid
    (volume-preserving) flow for densities too.

    Memory-saving rebuild (the paper's backward, Algorithm 1): ``G(y1)`` is evaluated once,
    recorded, on a leaf copy of ``y1`` and recovers ``x2``; ``F(x2)``, recorded, recovers
    ``x1`` and replays ``y1``; ``G``'s recorded graph is then grafted onto the replayed ``y1``.
    Each network runs once in backward (2 evaluations; the default inverse-then-replay needs 4).

    Random numbers: the rebuild evaluates ``G`` before ``F``, the opposite of the forward. When
    ``F`` holds an active ``nn.Dropout`` (any ``_DropoutNd`` with ``p > 0`` in training mode),
    the rebuild first runs ``F`` once without recording on a zero input of the same shape, so
    that ``G`` and then ``F`` draw exactly the forward's numbers (one extra evaluation of
    ``F``). Other random draws in ``F`` whose count depends on the input are not replayed.
    Batch statistics (BatchNorm in training mode) are fine: the rebuild evaluates each network
    on the same batch as the forward.

    Args:
        channels: size of dim 1 of the input (at least 2).
        f: the network added to the first half, ``x2 -> x1``-shaped.
        g: the network added to the second half, ``y1 -> x2``-shaped.
        conditional: call the networks as ``f(x2, context)`` and ``g(y1, context)``; the
            block then takes ``context=`` (and the memory-saving engine routes its gradient).

    Raises:
        TypeError: if ``f`` or ``g`` is not an ``nn.Module``.
        ValueError: if a network's output has the wrong shape (at the first call).

    Example:
        >>> import torch, flowkit
        >>> from torch import nn
        >>> def residual(c_in, c_out):
        ...     return nn.Sequential(nn.Conv2d(c_in, 8, 3, padding=1), nn.ReLU(),
        ...                          nn.Conv2d(8, c_out, 3, padding=1))
        >>> net = flowkit.Sequential(*(RevNetBlock(6, residual(3, 3), residual(3, 3))
        ...                            for _ in range(4)), memory_saving=True)
        >>> x = torch.randn(2, 6, 8, 8)
        >>> y, _ = net(x)
        >>> y.square().mean().backward()
        >>> torch.allclose(net.inverse(y.detach()), x, atol=1e-5)
        True

    References:
        Gomez, Ren, Urtasun & Grosse, "The Reversible Residual Network: Backpropagation Without
        Storing Activations", arXiv:1707.04585.
    """

    def __init__(
        self, channels: int, f: nn.Module, g: nn.Module, conditional: bool = False
    ) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"RevNetBlock needs at least 2 channels, got {channels}")
        for name, net in (("f", f), ("g", g)):
            if not isinstance(net, nn.Module):
                raise TypeError(
                    f"RevNetBlock's {name} must be an nn.Module, got {type(net).__name__}"
                )
        self.channels = channels
        self.first = (channels + 1) // 2
        self.f, self.g = f, g
        self.conditional = bool(conditional)

    def _split(self, x: State) -> tuple[Tensor, Tensor]:
        x = check_channels(self, x, self.channels)
        return x[:, : self.first], x[:, self.first :]

    def _run(self, net: nn.Module, name: str, x: Tensor, like: Tensor, context: Context) -> Tensor:
        if self.conditional:
            if context is None:
                raise FlowInputError(
                    f"RevNetBlock(conditional=True) calls {name}(x, context) and needs context="
                )
            out = net(x, context)
        else:
            check_no_context(self, context)
            out = net(x)
        if not isinstance(out, Tensor) or out.shape != like.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"RevNetBlock's {name} maps {tuple(x.shape)} to {got}, expected "
                f"{tuple(like.shape)}: it must keep every dimension but the channels and output "
                f"{like.shape[1]} channels"
            )
        return out.to(like.dtype)

    def forward(self, x: State, context: Context = None) -> tuple[Tensor, Tensor]:
        """``y = (x1 + F(x2), x2 + G(y1))`` and a zero logdet."""
        x1, x2 = self._split(x)
        y1 = x1 + self._run(self.f, "f", x2, x1, context)
        y2 = x2 + self._run(self.g, "g", y1, x2, context)
        return torch.cat([y1, y2], dim=1), zero_logdet(x1)

    def inverse(self, y: State, context: Context = None) -> Tensor:
        """``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``."""
        y1, y2 = self._split(y)
        x2 = y2 - self._run(self.g, "g", y1, y2, context)
        x1 = y1 - self._run(self.f, "f", x2, y1, context)
        return torch.cat([x1, x2], dim=1)

    def _f_draws_random_numbers(self) -> bool:
        return any(
            isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
            for m in self.f.modules()
        )

    def rebuild(self, y: State, context: Context = None) -> Rebuilt:
        """Invert and replay with each network evaluated once (see the class doc)."""
        y1, y2 = self._split(y)
        restart_replay_rng()
        if self._f_draws_random_numbers():
            with torch.no_grad(), recomputing():  # advance past F's draws, as in the forward
                self._run(self.f, "f", torch.zeros_like(y2), y1, context)
        with torch.enable_grad(), recomputing():
            y1_leaf = y1.detach().requires_grad_()
            gy1 = self._run(self.g, "g", y1_leaf, y2, context)
            x2 = (y2 - gy1.detach()).requires_grad_()
        restart_replay_rng()
        with torch.enable_grad(), recomputing():
            fx2 = self._run(self.f, "f", x2, y1, context)
            x1 = (y1 - fx2.detach()).requires_grad_()
            y1_replayed = x1 + fx2
            # G's graph was recorded on a leaf copy of y1; graft it onto the replayed y1.
            extra = [p for p in self.g.parameters() if p.requires_grad]
            extra += [t for t in context_tensors(context) if t.requires_grad]
            y2_replayed = x2 + _Graft.apply(y1_replayed, y1_leaf, gy1, *extra)
            outputs = torch.cat([y1_replayed, y2_replayed], dim=1)
        return Rebuilt(
            inputs=torch.cat([x1.detach(), x2.detach()], dim=1),
            outputs=outputs,
            logdet=zero_logdet(y1),
            leaves=(x1, x2, y1_leaf),
            merge=lambda grads: [torch.cat(grads[:2], dim=1)],
        )


class _Graft(torch.autograd.Function):
    """``G(y1_replayed)`` from the graph of ``G(y1_leaf)``, recorded on a leaf of equal value.

    Backward backpropagates the incoming gradient through that recorded graph: the gradient of
    ``y1_leaf`` goes to ``y1_replayed`` (so on into ``F`` and ``x1``), and those of ``G``'s
    parameters and the context (the ``extra`` inputs) are returned as this node's own. The
    recorded graph is an input of this node, so graph walks (the engine's check for outside
    tensors) still see everything ``G`` read.
    """

    @staticmethod
    def forward(ctx, y1_replayed: Tensor, y1_leaf: Tensor, gy1: Tensor, *extra: Tensor) -> Tensor:
        ctx.save_for_backward(y1_leaf, gy1, *extra)
        return gy1.detach().clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        y1_leaf, gy1, *extra = ctx.saved_tensors
        with torch.enable_grad():
            # retain_graph: the outer backward still visits the recorded graph (with no
            # gradient, as this node returns none for it) after this call.
            grads = torch.autograd.grad(
                gy1, [y1_leaf, *extra], grad, retain_graph=True, allow_unused=True
            )
        return (grads[0], None, None, *grads[1:])
