"""The ``Flow`` base class and the state convention every flowkit layer follows.

A *state* is a Tensor or a tuple of Tensors (a multi-scale state, finest scale first), each with
the batch as its first dimension. A :class:`Flow` maps a state ``x`` to a state ``y`` and returns
``logdet = log|det dy/dx|`` per sample, shape ``[batch]``, summed over all non-batch dimensions;
its ``inverse`` maps ``y`` back to ``x`` exactly (up to float rounding).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .errors import FlowInputError, InverseNotAvailable

__all__ = [
    "Context",
    "Flow",
    "InjectiveFlow",
    "Rebuilt",
    "State",
    "batch_size",
    "check_no_context",
    "context_kwargs",
    "context_tensors",
    "is_recomputing",
    "recomputing",
    "replay_rng",
    "restart_replay_rng",
    "state_tensors",
    "zero_logdet",
]

State = Tensor | tuple[Tensor, ...]
"""A Tensor, or a tuple of Tensors for a multi-scale state (finest first)."""

Context = Tensor | tuple["Context", ...] | None
"""Conditioning input of a conditional flow: a Tensor, a (nested) tuple of them, or ``None``.

:class:`flowkit.Parallel` splits a tuple context per element (one per scale) and broadcasts a
single Tensor to all elements; every other composite passes it unchanged.
"""

_local = threading.local()


def is_recomputing() -> bool:
    """Whether a layer's forward is a replay by the memory-saving engine.

    Layers with training-mode side effects (a data-dependent init, running statistics) skip them
    during a replay, so that they happen exactly once per step, as in plain autograd.
    """
    return getattr(_local, "recomputing", False)


@contextlib.contextmanager
def recomputing() -> Iterator[None]:
    """Mark the forward passes inside the block as replays (see :func:`is_recomputing`)."""
    previous = is_recomputing()
    _local.recomputing = True
    try:
        yield
    finally:
        _local.recomputing = previous


@contextlib.contextmanager
def replay_rng(restore: Callable[[], None]) -> Iterator[None]:
    """Within the block, :func:`restart_replay_rng` calls ``restore`` (set by the engine)."""
    previous = getattr(_local, "restore_rng", None)
    _local.restore_rng = restore
    try:
        restore()
        yield
    finally:
        _local.restore_rng = previous


def restart_replay_rng() -> None:
    """Reset the random state to that of the forward being replayed (no-op outside a replay).

    A :meth:`Flow.rebuild` that draws random numbers twice (in ``inverse`` and in the replayed
    ``forward``) calls it in between, so both see the numbers the original forward saw.
    """
    restore = getattr(_local, "restore_rng", None)
    if restore is not None:
        restore()


def state_tensors(state: State) -> tuple[Tensor, ...]:
    """The tensors of a state, as a tuple (a single Tensor becomes a 1-tuple)."""
    return (state,) if isinstance(state, Tensor) else tuple(state)


def context_tensors(context: Context) -> tuple[Tensor, ...]:
    """The tensors of a (nested) context, depth first; ``None`` entries are skipped."""
    if context is None:
        return ()
    if isinstance(context, Tensor):
        return (context,)
    if not isinstance(context, tuple):
        raise TypeError(
            f"a context is a Tensor, a tuple of Tensors (one per scale) or None, got a "
            f"{type(context).__name__}"
        )
    return tuple(t for part in context for t in context_tensors(part))


def context_kwargs(flow: nn.Module, context: Context) -> dict[str, Context]:
    """``{"context": context}`` for a conditional flow given a context, else ``{}``.

    Composites call their children as ``child(x, **context_kwargs(child, context))``, so a
    layer that does not declare ``conditional = True`` keeps its plain ``forward(x)``.
    """
    if context is None or not getattr(flow, "conditional", False):
        return {}
    return {"context": context}


def check_no_context(flow: nn.Module, context: Context) -> None:
    """Refuse a context given to a flow with no conditional layer (it would be ignored)."""
    if context is not None and not getattr(flow, "conditional", False):
        raise FlowInputError(
            f"{type(flow).__name__} got a context but contains no conditional layer, so the "
            "context would be ignored; give the context to a flow with a conditional layer "
            "(e.g. AffineCoupling(..., context_channels=C)) or drop it"
        )


def batch_size(state: State) -> int:
    """The batch size of a state (the first dimension of its first tensor)."""
    return state_tensors(state)[0].shape[0]


def zero_logdet(state: State) -> Tensor:
    """A zero log-determinant of shape ``[batch]`` on the state's device, in float32 or wider."""
    first = state_tensors(state)[0]
    dtype = torch.promote_types(first.dtype, torch.float32)
    return first.new_zeros(first.shape[0], dtype=dtype)


@dataclass
class Rebuilt:
    """A block's input rebuilt from its output, and the graph of its replayed forward.

    Attributes:
        inputs: the rebuilt input state (values; no graph).
        outputs: the replayed output state, recorded from ``leaves``.
        logdet: the replayed log-determinant, recorded from ``leaves``.
        leaves: the leaf tensors the replay's graph hangs from.
        merge: maps the gradients of ``leaves`` to one gradient per tensor of ``inputs``;
            ``None`` when the leaves *are* the input's tensors. A fused rebuild may split the
            input into several leaves (a coupling's passive and active halves).
    """

    inputs: State
    outputs: State
    logdet: Tensor
    leaves: tuple[Tensor, ...]
    merge: Callable[[list[Tensor]], list[Tensor]] | None = None


class Flow(nn.Module):
    """An invertible layer: ``forward(x) -> (y, logdet)`` and ``inverse(y) -> x``.

    Sign rule, stated once for all of flowkit: ``logdet`` is ``log|det dy/dx|`` of the forward
    map, one value per sample (shape ``[batch]``). The inverse's own log-determinant is its
    negative; :meth:`inverse_and_logdet` returns it.

    Subclasses implement :meth:`forward` and one of :meth:`inverse` or
    :meth:`inverse_and_logdet` (the other is derived). They may also override :meth:`rebuild`,
    the step of the memory-saving engine that recovers the input from the output and replays the
    forward with autograd recording; the default calls ``inverse`` then ``forward``, and a
    coupling layer can do both with one evaluation of its subnet.

    Conditioning: a layer whose map depends on a conditioning input sets
    ``conditional = True`` and takes a keyword ``context`` in ``forward``, ``inverse`` (or
    ``inverse_and_logdet``) and ``rebuild``. Composites pass the context only to conditional
    children, so other layers keep ``forward(x)``; a context given to a flow without a
    conditional layer raises :class:`~flowkit.errors.FlowInputError` instead of being ignored.

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.layers.ActNorm(4)
        >>> x = torch.randn(8, 4, 5, 5)
        >>> y, logdet = flow(x)
        >>> logdet.shape
        torch.Size([8])
        >>> torch.allclose(flow.inverse(y), x, atol=1e-5)
        True
    """

    #: Whether the map is a bijection (a logdet is claimed). See :class:`InjectiveFlow`.
    bijective: bool = True
    #: Whether the map takes a conditioning input (the ``context`` keyword).
    conditional: bool = False

    def __call__(self, *args, **kwargs):
        check_no_context(self, kwargs.get("context", args[1] if len(args) > 1 else None))
        return super().__call__(*args, **kwargs)

    def forward(self, x: State, context: Context = None) -> tuple[State, Tensor]:
        """Map ``x`` to ``(y, logdet)``, ``logdet = log|det dy/dx|`` of shape ``[batch]``."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(x)")

    def inverse(self, y: State, context: Context = None) -> State:
        """The input that ``forward`` maps to ``y``."""
        check_no_context(self, context)
        if type(self).inverse_and_logdet is Flow.inverse_and_logdet:
            raise InverseNotAvailable(
                f"{type(self).__name__} implements neither inverse(y) nor "
                "inverse_and_logdet(y); a Flow needs one of them to be placed in a flow"
            )
        return self.inverse_and_logdet(y, **context_kwargs(self, context))[0]

    def inverse_and_logdet(self, y: State, context: Context = None) -> tuple[State, Tensor]:
        """The inverse and its log-determinant ``log|det dx/dy|`` (minus the forward's)."""
        check_no_context(self, context)
        if type(self).inverse is Flow.inverse:
            raise InverseNotAvailable(
                f"{type(self).__name__} implements neither inverse(y) nor inverse_and_logdet(y)"
            )
        kwargs = context_kwargs(self, context)
        x = self.inverse(y, **kwargs)
        with recomputing():
            _, logdet = self.forward(x, **kwargs)
        return x, -logdet

    def rebuild(self, y: State, context: Context = None) -> Rebuilt:
        """Recover the input from the output and replay the forward with autograd recording.

        The step of the memory-saving engine. The default runs ``inverse`` without recording,
        then ``forward`` on leaf copies of the result; both run under :func:`recomputing`
        (they are replays), so they have no training-mode side effects. The context's tensors
        are used as given: the engine passes leaves, so the replay's graph reaches them.
        """
        check_no_context(self, context)
        kwargs = context_kwargs(self, context)
        with torch.no_grad(), recomputing():
            x = self.inverse(y, **kwargs)
        leaves = tuple(
            t.detach().requires_grad_(t.is_floating_point()) for t in state_tensors(x)
        )
        restart_replay_rng()
        with torch.enable_grad(), recomputing():
            y_replayed, logdet = self.forward(
                leaves[0] if isinstance(x, Tensor) else leaves, **kwargs
            )
        return Rebuilt(inputs=x, outputs=y_replayed, logdet=logdet, leaves=leaves)


class InjectiveFlow(Flow):
    """A map with more numbers out than in (e.g. a Laplacian pyramid), honest about it.

    ``inverse`` is an exact *left* inverse: ``inverse(forward(x)) == x``, while
    ``forward(inverse(y)) == y`` holds only for ``y`` in the range of ``forward``. No
    log-determinant exists for a non-square Jacobian: ``forward`` returns a zero ``logdet`` so
    that it composes, and ``bijective = False`` marks that it claims nothing;
    :class:`flowkit.NormalizingFlow` refuses such flows and :func:`flowkit.testing.check_flow`
    checks only the left inverse.
    """

    bijective = False
