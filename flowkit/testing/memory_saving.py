"""The check behind :func:`flowkit.testing.check_memory_saving`: a memory-saving flow trains as
plain autograd does (gradients of inputs, parameters and context, and the state it leaves)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor

from ..core import Context, Flow, State, context_tensors, state_tensors

__all__ = ["MemorySavingReport", "check_memory_saving", "default_gradient_tolerance"]

_GRADIENT_RTOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-3,
}


def default_gradient_tolerance(dtype: torch.dtype) -> float:
    """Memory-saving against plain gradients, relative to the largest entry, in ``dtype``."""
    return _GRADIENT_RTOL.get(dtype, 1e-5)


@dataclass
class MemorySavingReport:
    """The worst relative differences found by :func:`check_memory_saving`.

    Each is ``max|saving - plain| / max|plain|`` over the whole group of tensors.

    Attributes:
        output_error: the outputs and the logdet.
        input_grad_error: the gradients of the input state (``None``: no floating input).
        context_grad_error: the gradients of the context (``None``: no context).
        param_grad_error: the gradients of all parameters, as one vector.
        buffer_error: the buffers after the step (running statistics, counters).
    """

    output_error: float
    input_grad_error: float | None
    context_grad_error: float | None
    param_grad_error: float
    buffer_error: float


def _error(actual: list[Tensor], expected: list[Tensor]) -> float | None:
    """max |a - e| / max |e| over a group of tensors (``None`` for an empty group)."""
    if not expected:
        return None
    diff = max(float((a.double() - e.double()).abs().max()) for a, e in zip(
        actual, expected, strict=True) if e.numel())
    scale = max(float(e.double().abs().max()) for e in expected if e.numel())
    return diff / scale if scale > 0 else diff


def _runs_engine(tensors: tuple[Tensor, ...]) -> bool:
    """Whether the graph behind ``tensors`` contains the memory-saving engine's node."""
    stack = [t.grad_fn for t in tensors if t.grad_fn is not None]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if "ReversibleChain" in type(node).__name__:
            return True
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return False


def _leaves(state: State | Context) -> list[Tensor]:
    return [t.detach().clone().requires_grad_(t.is_floating_point())
            for t in context_tensors(state)]


def _like(tensors: list[Tensor], template: State | Context) -> State | Context:
    parts = iter(tensors)

    def build(node):
        if node is None:
            return None
        if isinstance(node, Tensor):
            return next(parts)
        return tuple(build(part) for part in node)

    return build(template)


def _step(
    flow: Flow, x: State, context: Context, seed: int
) -> tuple[list[Tensor], list[Tensor], list[Tensor], bool]:
    """One training forward and backward with random cotangents: (outputs, input grads,
    context grads), and whether the engine ran."""
    inputs, contexts = _leaves(x), _leaves(context)
    kwargs = {} if context is None else {"context": _like(contexts, context)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        y, logdet = flow(_like(inputs, x), **kwargs)
    outputs = [*state_tensors(y), logdet]
    generator = torch.Generator().manual_seed(seed + 1)
    cotangents = [
        torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t) for t in outputs
    ]
    loss = sum((t * g).sum() for t, g in zip(outputs, cotangents, strict=True))
    engine = _runs_engine(tuple(outputs))
    loss.backward()
    grads = [_grad(t) for t in inputs if t.requires_grad]
    context_grads = [_grad(t) for t in contexts if t.requires_grad]
    return [t.detach() for t in outputs], grads, context_grads, engine


def _grad(t: Tensor) -> Tensor:
    return torch.zeros_like(t) if t.grad is None else t.grad


def check_memory_saving(
    flow: Flow, x: State, context: Context = None, *, rtol: float | None = None, seed: int = 0
) -> MemorySavingReport:
    """Check that a flow with memory-saving Sequentials trains exactly as plain autograd.

    Runs one training step (train mode, grad enabled, random cotangents on the outputs and the
    logdet) on two deep copies of ``flow``: as given, which must run the memory-saving engine,
    and with every ``memory_saving`` switched off. Compares, each group as a whole relative to
    its largest entry: the outputs and logdet, the gradients of the input, of the context and
    of all parameters, and the buffers after the step (a replay must not change state). The
    random state is the same for both (dropout draws the same masks).

    Args:
        flow: a flow containing at least one ``Sequential(..., memory_saving=True)``.
        x: an input state.
        context: the conditioning input of a conditional flow.
        rtol: the relative tolerance (default :func:`default_gradient_tolerance` of the dtype:
            float64 1e-10, float32 1e-5).
        seed: seeds the random state and the cotangents.

    Returns:
        A :class:`MemorySavingReport`.

    Raises:
        ValueError: ``flow`` has no memory-saving Sequential.
        AssertionError: the engine did not run, or a group differs, naming it and the error.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import AffineCoupling, ConvSubnet, Reverse
        >>> from flowkit.testing import check_memory_saving, perturb_parameters_
        >>> flow = perturb_parameters_(flowkit.Sequential(
        ...     AffineCoupling(4, lambda i, o: ConvSubnet(i, o, 8)), Reverse(4),
        ...     memory_saving=True)).double()
        >>> check_memory_saving(flow, torch.randn(2, 4, 5, 5).double()).param_grad_error < 1e-10
        True
    """
    first = state_tensors(x)[0]
    saving = copy.deepcopy(flow).to(first.device).train()
    if first.is_floating_point():
        saving = saving.to(first.dtype)
    switches = [m for m in saving.modules() if getattr(m, "memory_saving", False)]
    if not switches:
        raise ValueError(
            f"check_memory_saving: {type(flow).__name__} contains no Sequential with "
            "memory_saving=True; build it with memory_saving=True to check the engine"
        )
    plain = copy.deepcopy(saving)
    for module in plain.modules():
        if getattr(module, "memory_saving", False):
            module.memory_saving = False
    rtol = default_gradient_tolerance(first.dtype) if rtol is None else rtol
    out_s, grads_s, context_s, engine = _step(saving, x, context, seed)
    if not engine:
        raise AssertionError(
            "check_memory_saving: the memory-saving engine did not run (no reversible chain in "
            "the graph): is grad enabled and the memory-saving Sequential on the path?"
        )
    out_p, grads_p, context_p, _ = _step(plain, x, context, seed)
    params = [(name, p, q) for (name, p), q in zip(
        plain.named_parameters(), saving.parameters(), strict=True) if p.requires_grad]
    for name, p, q in params:
        if (p.grad is None) != (q.grad is None):
            raise AssertionError(
                f"check_memory_saving: parameter {name} has a gradient in "
                f"{'plain autograd' if q.grad is None else 'memory saving'} only"
            )
    pairs = list(zip(plain.buffers(), saving.buffers(), strict=True))
    floating = [(p, q) for p, q in pairs if p.is_floating_point()]
    report = MemorySavingReport(
        output_error=_error(out_s, out_p),
        input_grad_error=_error(grads_s, grads_p),
        context_grad_error=_error(context_s, context_p),
        param_grad_error=_error(
            [q.grad for _, p, q in params if p.grad is not None],
            [p.grad for _, p, _ in params if p.grad is not None],
        ) or 0.0,
        buffer_error=_error([q for _, q in floating], [p for p, _ in floating]) or 0.0,
    )
    if not all(torch.equal(p, q) for p, q in pairs if not p.is_floating_point()):
        raise AssertionError(
            "check_memory_saving: an integer buffer (a counter such as BatchNorm's "
            "num_batches_tracked) differs after the step: a replay changed state"
        )
    for what, error in vars(report).items():
        if error is not None and error > rtol:
            raise AssertionError(
                f"check_memory_saving: {what} = {error:.3g} > {rtol:.3g} (memory saving "
                "against plain autograd, relative to the largest entry)"
            )
    return report


