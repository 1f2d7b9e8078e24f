"""Composition of flows: in sequence, per scale of a tuple state, inverted, split and merged."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from .core import (
    Context,
    Flow,
    State,
    check_no_context,
    context_kwargs,
    state_tensors,
    zero_logdet,
)
from .debug import check_finite, is_debug
from .errors import FlowInputError, InverseNotAvailable
from .reversible import OnDrift, reversible_forward
from .validation import check_single, check_tuple

__all__ = ["Identity", "Inverse", "Parallel", "Sequential", "Split"]


def _check_flows(owner: str, flows: Iterable[nn.Module]) -> list[Flow]:
    """Require every element to be a :class:`Flow`, naming the first that is not."""
    checked = []
    for index, flow in enumerate(flows):
        if not isinstance(flow, Flow):
            raise InverseNotAvailable(
                f"{owner} element {index} is a {type(flow).__name__}, not a flowkit.Flow: it has "
                "no inverse or log-determinant. Use it as a coupling subnet, or subclass "
                "flowkit.Flow and implement forward(x) -> (y, logdet) and inverse(y)"
            )
        checked.append(flow)
    return checked


class Sequential(Flow):
    """Flows applied one after another: log-determinants add up, ``inverse`` runs backwards.

    With ``memory_saving=True`` the training forward keeps no activations: only the output is
    kept, and backward rebuilds each block's input from its output (see
    :mod:`flowkit.reversible`), so activation memory does not grow with depth. Gradients equal
    plain autograd's up to float rounding.

    Args:
        *flows: the blocks, each a :class:`Flow`.
        memory_saving: train with the reversible engine instead of storing activations.
        preserve_rng_state: with ``memory_saving``, replay each block with the random state of
            its forward, so dropout in a subnet draws the same mask (costs a few host copies of
            the generator state per block).
        drift_tolerance: with ``memory_saving``, the relative error of the rebuilt chain input
            tolerated by the drift guard; ``None``: per dtype,
            :func:`flowkit.reversible.default_drift_tolerance`.
        on_drift: ``"raise"`` a :class:`~flowkit.errors.ReconstructionError` or ``"warn"``
            (:class:`~flowkit.errors.ReconstructionWarning`) when the guard fires.

    Raises:
        FlowInputError: a context given to a Sequential without conditional block.
        ReconstructionError: in a memory-saving backward, when the input rebuilt for the first
            block is off by more than ``drift_tolerance`` (names the block where it started).
        RuntimeError: in a memory-saving backward, when a block reads a tensor that requires
            grad from outside the Sequential (pass it as ``context=``).

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import AffineCoupling, ConvSubnet, Reverse
        >>> def subnet(c_in, c_out):
        ...     return ConvSubnet(c_in, c_out, hidden=8)
        >>> flow = flowkit.Sequential(AffineCoupling(4, subnet), Reverse(4),
        ...                           AffineCoupling(4, subnet), memory_saving=True)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> y, logdet = flow(x)
        >>> (y.square().sum() - logdet.sum()).backward()
        >>> torch.allclose(flow.inverse(y), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        *flows: Flow,
        memory_saving: bool = False,
        preserve_rng_state: bool = True,
        drift_tolerance: float | None = None,
        on_drift: OnDrift | str = OnDrift.RAISE,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(_check_flows("Sequential", flows))
        self.memory_saving = memory_saving
        self.preserve_rng_state = preserve_rng_state
        if drift_tolerance is not None and not drift_tolerance >= 0:
            raise ValueError(f"drift_tolerance must be >= 0 or None, got {drift_tolerance!r}")
        self.drift_tolerance = drift_tolerance
        self.on_drift = OnDrift(on_drift)
        #: The :class:`~flowkit.reversible.DriftReport` of the last memory-saving backward, if
        #: it ran under :func:`flowkit.debug_mode` or the drift guard fired (else ``None``).
        self.drift = None

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return all(block.bijective for block in self.blocks)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(block.conditional for block in self.blocks)

    def chain(self, prefix: str = "") -> tuple[list[Flow], list[str]]:
        """The blocks with nested Sequentials expanded, and their positions (``"2"``, ``"2.0"``).

        What the memory-saving engine walks: a nested Sequential's blocks each replay with
        their own random state and fused rebuild. A subclass that changes ``forward`` or
        ``rebuild`` stays one block.
        """
        blocks: list[Flow] = []
        names: list[str] = []
        for index, block in enumerate(self.blocks):
            name = f"{prefix}{index}"
            if isinstance(block, Sequential) and type(block).forward is Sequential.forward and (
                type(block).rebuild is Flow.rebuild
            ):
                inner, inner_names = block.chain(f"{name}.")
                blocks += inner
                names += inner_names
            else:
                blocks.append(block)
                names.append(name)
        return blocks, names

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> Flow:
        return self.blocks[index]

    def __iter__(self):
        return iter(self.blocks)

    def forward(self, x: State, context: Context = None) -> tuple[State, Tensor]:
        """Apply the blocks in order; with memory saving when autograd is recording.

        ``context`` goes to every conditional block (see :class:`flowkit.Flow`).
        """
        check_no_context(self, context)
        if self.memory_saving and torch.is_grad_enabled():
            return reversible_forward(self, x, context)
        logdet = zero_logdet(x)
        for index, block in enumerate(self.blocks):
            x, block_logdet = block(x, **context_kwargs(block, context))
            logdet = logdet + block_logdet
            if is_debug():
                check_finite(x, logdet, f"block {index} ({type(block).__name__})")
        return x, logdet

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[State, Tensor]:
        """Invert the blocks in reverse order, adding their inverse log-determinants."""
        check_no_context(self, context)
        logdet = zero_logdet(y)
        for block in reversed(self.blocks):
            y, block_logdet = block.inverse_and_logdet(y, **context_kwargs(block, context))
            logdet = logdet + block_logdet
        return y, logdet

    def inverse(self, y: State, context: Context = None) -> State:
        """Invert the blocks in reverse order."""
        check_no_context(self, context)
        for block in reversed(self.blocks):
            y = block.inverse(y, **context_kwargs(block, context))
        return y


class Parallel(Flow):
    """One flow per element of a tuple state (e.g. one per scale); log-determinants add up.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import ActNorm
        >>> flow = flowkit.Parallel(ActNorm(2), flowkit.Identity())
        >>> (y0, y1), logdet = flow((torch.randn(3, 2, 4, 4), torch.randn(3, 5, 2, 2)))
        >>> y1.shape
        torch.Size([3, 5, 2, 2])
    """

    def __init__(self, *flows: Flow) -> None:
        super().__init__()
        self.flows = nn.ModuleList(_check_flows("Parallel", flows))

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return all(flow.bijective for flow in self.flows)

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return any(flow.conditional for flow in self.flows)

    def _contexts(self, context: Context) -> list[dict[str, Context]]:
        """The context keywords of each flow: a tuple split per element, a Tensor broadcast."""
        check_no_context(self, context)
        if context is None or isinstance(context, Tensor):
            return [context_kwargs(flow, context) for flow in self.flows]
        if not isinstance(context, tuple) or len(context) != len(self.flows):
            got = f"a tuple of {len(context)}" if isinstance(context, tuple) else repr(context)
            raise FlowInputError(
                f"Parallel of {len(self.flows)} flows got a context that is {got}; give one "
                "entry per element (None for an element without conditional layer) or one "
                "Tensor for all"
            )
        for index, (flow, part) in enumerate(zip(self.flows, context, strict=True)):
            if part is not None and not flow.conditional:
                raise FlowInputError(
                    f"Parallel element {index} ({type(flow).__name__}) has no conditional "
                    "layer but got a context entry; pass None in that position"
                )
        return [context_kwargs(f, c) for f, c in zip(self.flows, context, strict=True)]

    def forward(self, x: State, context: Context = None) -> tuple[State, Tensor]:
        """Apply flow ``i`` to element ``i`` of the tuple state (with context entry ``i``)."""
        parts = check_tuple(self, x, len(self.flows))
        outputs, logdet = [], zero_logdet(x)
        for flow, part, kwargs in zip(self.flows, parts, self._contexts(context), strict=False):
            y, part_logdet = flow(part, **kwargs)
            outputs.append(y)
            logdet = logdet + part_logdet
        return tuple(outputs), logdet

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[State, Tensor]:
        """Invert flow ``i`` on element ``i``."""
        parts = check_tuple(self, y, len(self.flows))
        outputs, logdet = [], zero_logdet(y)
        for flow, part, kwargs in zip(self.flows, parts, self._contexts(context), strict=False):
            x, part_logdet = flow.inverse_and_logdet(part, **kwargs)
            outputs.append(x)
            logdet = logdet + part_logdet
        return tuple(outputs), logdet


class Inverse(Flow):
    """A flow run backwards: ``forward`` is the wrapped ``inverse`` and the logdet is negated.

    Example:
        >>> import torch, flowkit
        >>> unsqueeze = flowkit.Inverse(flowkit.layers.Squeeze(2))
        >>> unsqueeze(torch.randn(1, 8, 3, 3))[0].shape
        torch.Size([1, 2, 6, 6])
    """

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = _check_flows("Inverse", [flow])[0]

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return self.flow.bijective

    @property
    def conditional(self) -> bool:  # type: ignore[override]
        return self.flow.conditional

    def forward(self, x: State, context: Context = None) -> tuple[State, Tensor]:
        """The wrapped flow's ``inverse_and_logdet``."""
        check_no_context(self, context)
        return self.flow.inverse_and_logdet(x, **context_kwargs(self.flow, context))

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[State, Tensor]:
        """The wrapped flow's ``forward``."""
        check_no_context(self, context)
        return self.flow(y, **context_kwargs(self.flow, context))


class Identity(Flow):
    """The identity map (logdet 0): a placeholder in :class:`Parallel`."""

    def forward(self, x: State) -> tuple[State, Tensor]:
        """Return ``x`` unchanged."""
        return x, zero_logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[State, Tensor]:
        """Return ``y`` unchanged."""
        return y, zero_logdet(y)


class Split(Flow):
    """Split a tensor into a tuple along the channels (dim 1); the inverse concatenates.

    ``Inverse(Split(...))`` merges a tuple back into one tensor. A volume-preserving
    rearrangement: logdet 0.

    Args:
        sections: channel counts of the parts, in order.

    Example:
        >>> import torch, flowkit
        >>> (a, b), _ = flowkit.Split([1, 3])(torch.randn(2, 4, 5, 5))
        >>> a.shape, b.shape
        (torch.Size([2, 1, 5, 5]), torch.Size([2, 3, 5, 5]))
    """

    def __init__(self, sections: Sequence[int]) -> None:
        super().__init__()
        if len(sections) < 2 or any(int(s) < 1 for s in sections):
            raise ValueError(
                f"Split needs at least two positive channel counts, got sections={sections!r}"
            )
        self.sections = [int(s) for s in sections]

    def forward(self, x: State) -> tuple[State, Tensor]:
        """Split ``x`` along dim 1 into ``len(sections)`` tensors."""
        x = check_single(self, x)
        if x.shape[1] != sum(self.sections):
            raise ValueError(
                f"Split{tuple(self.sections)} needs {sum(self.sections)} channels, got "
                f"{x.shape[1]} (shape {tuple(x.shape)}); make the sections add up to it"
            )
        return tuple(x.split(self.sections, dim=1)), zero_logdet(x)

    def inverse_and_logdet(self, y: State) -> tuple[State, Tensor]:
        """Concatenate the tuple along dim 1."""
        parts = check_tuple(self, y, len(self.sections))
        return torch.cat(state_tensors(parts), dim=1), zero_logdet(y)
