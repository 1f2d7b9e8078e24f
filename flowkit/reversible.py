"""The memory-saving backprop engine: activations are rebuilt from outputs during backward.

One ``autograd.Function`` spans a whole :class:`flowkit.Sequential`. Its forward runs the blocks
without recording and saves only the final output (and a reference to the chain's input, for
the drift guard). Its backward walks the blocks in reverse: each block rebuilds its input from
its output (:meth:`flowkit.Flow.rebuild`: ``inverse``, then a replay of ``forward`` with
autograd recording, or a fused step in coupling layers), and the gradient is backpropagated
through that block alone. Activation memory is that of one block. Nested Sequentials are walked
block by block (composition is associative), so each of their blocks replays with its own
random state and its own fused rebuild.

Guarantees, each tested against plain autograd:
- the context (conditioning input) is an input of the ``autograd.Function``: its gradient,
  accumulated over the blocks, flows back to whatever produced it;
- any other tensor that requires grad and that a replayed block reads (a parent module's
  parameter, an encoder output captured in a closure) is detected by a walk of the replayed
  graph and refused with a ``RuntimeError`` naming the block: its gradient is never dropped
  silently;
- a replay never changes state: it runs under :func:`flowkit.core.recomputing` (data-dependent
  inits and flowkit's running statistics skip their updates) and every buffer of the replayed
  block (BatchNorm's running statistics and counter, any module's) is restored afterwards;
- with ``preserve_rng_state`` each block replays with the random state of its forward (dropout
  draws the same mask), and under the autocast state of the forward;
- the drift guard: the rebuilt input of the first block is compared with the chain's real input
  (one host sync per backward, none per block); past the tolerance a
  :class:`~flowkit.errors.ReconstructionError` (or a warning) names the first block, counted
  from the end, whose rebuilt input left the true one.

References:
    Gomez et al., "The Reversible Residual Network: Backpropagation Without Storing
    Activations", arXiv:1707.04585.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from .core import (
    Context,
    State,
    context_kwargs,
    context_tensors,
    recomputing,
    replay_rng,
    state_tensors,
    zero_logdet,
)
from .debug import check_finite, is_debug
from .errors import ReconstructionError, ReconstructionWarning
from .kernels.choice import Choice

__all__ = ["DriftReport", "OnDrift", "default_drift_tolerance", "reversible_forward"]

_AUTOCAST_DEVICES = ("cpu", "cuda")

_DRIFT_TOLERANCE = {
    torch.float64: 1e-8,
    torch.float32: 1e-4,
    torch.bfloat16: 1e-1,
    torch.float16: 3e-2,
}


def default_drift_tolerance(dtype: torch.dtype) -> float:
    """The relative drift of the rebuilt chain input tolerated by default in ``dtype``.

    Healthy stacks stay far below it (depth 64: float32 ~3e-6, float64 ~2e-13), and the
    gradients' relative error is of the order of the drift (float32: 2e-4 of drift gave 3e-4 of
    gradient error); an unstable inverse amplifies the error by orders of magnitude per block
    and crosses it.
    """
    return _DRIFT_TOLERANCE.get(dtype, _DRIFT_TOLERANCE[torch.float32])


class OnDrift(Choice):
    """What the drift guard does when the rebuilt chain input left the true one."""

    RAISE = "raise"
    WARN = "warn"


@dataclass
class DriftReport:
    """How exactly each block's input was rebuilt in a memory-saving backward.

    Both lists are in forward order, one relative error ``max|error| / max|true input|`` per
    block. Recorded under :func:`flowkit.debug_mode`, and whenever the drift guard fires.

    Attributes:
        rebuilt: the rebuilt input against the true one: what the gradients were computed at,
            including the error carried over from the blocks after it.
        local: the block's own inverse applied to its true output (its own error, before any
            amplification by the blocks before it).
        tolerance: the relative drift tolerated (see :func:`default_drift_tolerance`).
        names: each block's position, ``"3"`` or, for a block of a nested Sequential (the
            engine walks nested Sequentials block by block), ``"3.1"``.
    """

    rebuilt: list[float]
    local: list[float]
    tolerance: float = 0.0
    names: list[str] = field(default_factory=list)

    def worst_block(self) -> int | None:
        """The block where the rebuild left the truth: the first, counted from the end, whose
        rebuilt input is off by more than ``tolerance``; ``None`` if no block is.

        The error starts there and is carried (and amplified) by every block before it, so
        that block, not the one with the largest error, is where to look.
        """
        for index in reversed(range(len(self.rebuilt))):
            if not self.rebuilt[index] <= self.tolerance:  # NaN counts as off
                return index
        return None


@dataclass
class _RngState:
    """The generator states (CPU and the CUDA devices in use) before one block's forward."""

    cpu: Tensor
    cuda: dict[int, Tensor]

    @classmethod
    def capture(cls, devices: list[int]) -> _RngState:
        return cls(torch.get_rng_state(), {d: torch.cuda.get_rng_state(d) for d in devices})

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        for device, state in self.cuda.items():
            torch.cuda.set_rng_state(state, device)


@dataclass
class _Run:
    """What one memory-saving forward leaves for its backward (no activations)."""

    sequential: torch.nn.Module
    blocks: list[nn.Module]
    names: list[str]
    input_is_tuple: bool
    n_state: int
    context: Context
    n_context: int
    params: list[torch.nn.Parameter]
    cuda_devices: list[int]
    autocast: dict[str, tuple[bool, torch.dtype]]
    debug: bool = False
    rng: list[_RngState] = field(default_factory=list)
    output_is_tuple: bool = False


def _structured(tensors: tuple[Tensor, ...], is_tuple: bool) -> State:
    return tuple(tensors) if is_tuple else tensors[0]


def _detached(state: State) -> State:
    tensors = tuple(t.detach() for t in state_tensors(state))
    return _structured(tensors, not isinstance(state, Tensor))


def _with_tensors(context: Context, tensors: Iterator[Tensor]) -> Context:
    """``context`` with its tensors replaced, depth first, by the next of ``tensors``."""
    if context is None:
        return None
    if isinstance(context, Tensor):
        return next(tensors)
    return tuple(_with_tensors(part, tensors) for part in context)


@contextlib.contextmanager
def _replaying(run: _Run, index: int) -> Iterator[None]:
    """Restore block ``index``'s random state and the forward's autocast state."""
    with contextlib.ExitStack() as stack:
        if run.rng:
            stack.enter_context(torch.random.fork_rng(devices=run.cuda_devices))
            stack.enter_context(replay_rng(run.rng[index].restore))
        for device, (enabled, dtype) in run.autocast.items():
            stack.enter_context(torch.autocast(device, dtype=dtype, enabled=enabled))
        yield


@contextlib.contextmanager
def _buffers_kept(module: nn.Module) -> Iterator[None]:
    """Put back every buffer of ``module``'s tree as it was on entry (values and objects).

    A replay is not a step: BatchNorm's running statistics and counter, and any module's
    buffers, must be what the real forward left. Restored on exit, after the block's backward
    (a replayed graph may hold a buffer, which an earlier in-place restore would invalidate).
    """
    kept = [
        (owner, name, buffer, buffer.clone())
        for owner in module.modules()
        for name, buffer in owner._buffers.items()
        if buffer is not None
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for owner, name, buffer, value in kept:
                owner._buffers[name] = buffer
                buffer.copy_(value)


def _block_name(run: _Run, index: int) -> str:
    return f"block {run.names[index]} ({type(run.blocks[index]).__name__})"


def _sequence_marker() -> int:
    """The autograd sequence number the next recorded node of this thread will exceed."""
    with torch.enable_grad():
        return (torch.zeros((), requires_grad=True) * 1).grad_fn._sequence_nr()


def _outside(run: _Run, index: int, what: str, shape: tuple[int, ...]) -> RuntimeError:
    return RuntimeError(
        f"flowkit.Sequential(memory_saving=True): {_block_name(run, index)} depends on {what} "
        f"of shape {shape} that requires grad but is neither the state, the context nor a "
        "parameter of this Sequential (a parent module's parameter or an encoder output "
        "captured by a subnet, say). Its gradient would be lost: pass it as context= (and "
        "build the layer conditional), or register the module that owns it inside the "
        "Sequential"
    )


def _graph_leaves(
    run: _Run, index: int, roots: list[Tensor], known: set[int], marker: int
) -> list[Tensor]:
    """The parameters of the Sequential that the replayed graph of block ``index`` reaches.

    Walks ``grad_fn.next_functions`` from the replay's outputs. Every leaf reached must be one
    of ``known`` (the rebuilt state's leaves and the context's) or a parameter of the
    Sequential; a node recorded before the replay (its sequence number is below ``marker``) is
    an outside tensor computed elsewhere (an encoder output, say). Either means the block read
    an outside tensor that requires grad, whose gradient the engine could not deliver: that
    raises, naming the block and the tensor's shape. (On CUDA, where backward runs in another
    thread, an outside node may escape the sequence test; the walk then reaches its leaves,
    which raise.) Cost: one visit per node of one block's replayed graph.
    """
    param_ids = {id(p): p for p in run.params}
    used: dict[int, Tensor] = {}

    def leaf(tensor: Tensor) -> None:
        key = id(tensor)
        if key in param_ids:
            used[key] = param_ids[key]
        elif key not in known:
            kind = "an nn.Parameter" if isinstance(tensor, nn.Parameter) else "a leaf tensor"
            raise _outside(run, index, f"{kind} ({tensor.dtype})", tuple(tensor.shape))

    stack = []
    for root in roots:
        if root.grad_fn is None:
            leaf(root)
        elif root.grad_fn._sequence_nr() < marker:
            raise _outside(run, index, "a tensor", tuple(root.shape))
        else:
            stack.append(root.grad_fn)
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for next_node, input_nr in node.next_functions:
            if next_node is None:
                continue
            variable = getattr(next_node, "variable", None)
            if variable is not None:
                leaf(variable)
            elif next_node._sequence_nr() < marker:
                metadata = next_node._input_metadata[input_nr]
                raise _outside(
                    run, index, f"a tensor ({metadata.dtype}) computed by {next_node.name()}",
                    tuple(metadata.shape),
                )
            else:
                stack.append(next_node)
    return list(used.values())


class _ReversibleChain(torch.autograd.Function):
    """Forward without activations; backward by rebuilding inputs block by block."""

    @staticmethod
    def forward(ctx, run: _Run, *inputs: Tensor) -> tuple[Tensor, ...]:
        state = _structured(inputs[: run.n_state], run.input_is_tuple)
        context = _with_tensors(
            run.context, iter(inputs[run.n_state : run.n_state + run.n_context])
        )
        input_ids = {id(t) for t in inputs}
        logdet = zero_logdet(state)
        for index, block in enumerate(run.blocks):
            if run.sequential.preserve_rng_state:
                run.rng.append(_RngState.capture(run.cuda_devices))
            state, block_logdet = block(state, **context_kwargs(block, context))
            logdet = logdet + block_logdet
            if run.debug:
                check_finite(state, logdet, _block_name(run, index))
        # An output that aliases an input or is a view would confuse autograd's bookkeeping.
        outputs = tuple(
            t.clone() if id(t) in input_ids or t._is_view() else t for t in state_tensors(state)
        )
        run.output_is_tuple = not isinstance(state, Tensor)
        ctx.run = run
        ctx.n_outputs = len(outputs)
        # The chain's input is kept for the drift guard: one state, whatever the depth.
        ctx.save_for_backward(*outputs, *inputs[: run.n_state + run.n_context])
        return (*outputs, logdet)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "flowkit.Sequential(memory_saving=True) does not support double backward "
                "(create_graph=True): it rebuilds activations instead of keeping a graph. "
                "Use memory_saving=False for higher-order gradients"
            )
        run: _Run = ctx.run
        saved = ctx.saved_tensors
        n_out = ctx.n_outputs
        output = _structured(tuple(t.detach() for t in saved[:n_out]), run.output_is_tuple)
        true_input = saved[n_out : n_out + run.n_state]
        needs = ctx.needs_input_grad[1 + run.n_state : 1 + run.n_state + run.n_context]
        context_leaves = [
            t.detach().requires_grad_(need)
            for t, need in zip(saved[n_out + run.n_state :], needs, strict=True)
        ]
        context = _with_tensors(run.context, iter(context_leaves))
        context_wrt = [t for t in context_leaves if t.requires_grad]
        param_index = {id(p): i for i, p in enumerate(run.params)}
        param_grads: list[Tensor | None] = [None] * len(run.params)
        context_grads: list[Tensor | None] = [None] * len(context_wrt)
        grad_state, grad_logdet = list(grads[:-1]), grads[-1]
        state = output
        blocks = run.blocks
        for index in reversed(range(len(blocks))):
            block = blocks[index]
            with _buffers_kept(block):
                marker = _sequence_marker()
                with _replaying(run, index):
                    rebuilt = block.rebuild(state, **context_kwargs(block, context))
                leaves = [t for t in rebuilt.leaves if t.requires_grad]
                outputs, grad_outputs = [], []
                for out, grad in zip((*state_tensors(rebuilt.outputs), rebuilt.logdet),
                                     (*grad_state, grad_logdet), strict=False):
                    if out.requires_grad:
                        outputs.append(out)
                        grad_outputs.append(grad.to(out.dtype))
                known = {id(t) for t in (*leaves, *context_wrt)}
                block_params = _graph_leaves(run, index, outputs, known, marker)
                wrt = leaves + context_wrt + block_params
                found = list(
                    torch.autograd.grad(outputs, wrt, grad_outputs, allow_unused=True)
                    if outputs and wrt
                    else [None] * len(wrt)
                )
            n_leaves, n_context = len(leaves), len(context_wrt)
            for i, g in enumerate(found[n_leaves : n_leaves + n_context]):
                if g is not None:
                    context_grads[i] = g if context_grads[i] is None else context_grads[i] + g
            for p, g in zip(block_params, found[n_leaves + n_context :], strict=True):
                if g is not None:
                    i = param_index[id(p)]
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            leaf_grads = iter(found[:n_leaves])
            grad_leaves = [
                _or_zeros(next(leaf_grads) if t.requires_grad else None, t)
                for t in rebuilt.leaves
            ]
            grad_state = rebuilt.merge(grad_leaves) if rebuilt.merge else grad_leaves
            state = _detached(rebuilt.inputs)
        _guard_drift(run, state_tensors(state), true_input, output, context)
        wanted = ctx.needs_input_grad[1 : 1 + run.n_state]
        input_grads = [g if need else None for g, need in zip(grad_state, wanted, strict=True)]
        context_iter = iter(context_grads)
        all_context_grads = [next(context_iter) if t.requires_grad else None
                             for t in context_leaves]
        return (None, *input_grads, *all_context_grads, *param_grads)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _relative_drift(rebuilt: tuple[Tensor, ...], true: tuple[Tensor, ...]) -> Tensor:
    """max |rebuilt - true| / max |true| over a state's tensors, on the device (no sync)."""
    error = torch.stack([(r.detach() - t).abs().max().double() for r, t in zip(
        rebuilt, true, strict=True)]).max()
    scale = torch.stack([t.abs().max().double() for t in true]).max()
    return error / scale.clamp_min(torch.finfo(true[0].dtype).tiny)


def _tolerance(run: _Run, dtype: torch.dtype) -> float:
    configured = run.sequential.drift_tolerance
    if configured is not None:
        return float(configured)
    low = [d for enabled, d in run.autocast.values() if enabled]
    return max(default_drift_tolerance(d) for d in (dtype, *low))


def _drift_report(run: _Run, true_input: State, output: State, context: Context,
                  tolerance: float) -> DriftReport:
    """Per-block drift, from a recomputed forward (true states) and a chain of inverses.

    Keeps every block's state: run only in debug mode or once the guard has fired.
    """
    blocks = run.blocks
    true_states = [true_input]
    with torch.no_grad(), recomputing():
        for index, block in enumerate(blocks):
            with _buffers_kept(block), _replaying(run, index):
                state, _ = block(true_states[-1], **context_kwargs(block, context))
            true_states.append(state)
        rebuilt, local = [0.0] * len(blocks), [0.0] * len(blocks)
        state = output
        for index in reversed(range(len(blocks))):
            block, kwargs = blocks[index], context_kwargs(blocks[index], context)
            truth = state_tensors(true_states[index])
            with _buffers_kept(block), _replaying(run, index):
                state = block.inverse(state, **kwargs)
                own = block.inverse(true_states[index + 1], **kwargs)
            rebuilt[index] = float(_relative_drift(state_tensors(state), truth))
            local[index] = float(_relative_drift(state_tensors(own), truth))
    return DriftReport(rebuilt, local, tolerance, list(run.names))


def _guard_drift(run: _Run, rebuilt: tuple[Tensor, ...], true_input: tuple[Tensor, ...],
                 output: State, context: Context) -> None:
    """Compare the rebuilt chain input with the real one: one host sync per backward."""
    tolerance = _tolerance(run, true_input[0].dtype)
    true_state = _structured(tuple(t.detach() for t in true_input), run.input_is_tuple)
    drift = float(_relative_drift(rebuilt, true_input))
    if drift <= tolerance and not run.debug:
        run.sequential.drift = None
        return
    report = _drift_report(run, true_state, output, context, tolerance)
    run.sequential.drift = report
    if drift <= tolerance:
        return
    block = report.worst_block()
    where = (
        f"the first block, counted from the end, whose rebuilt input left the true one is "
        f"{_block_name(run, block)} (relative drift {report.rebuilt[block]:.3g}, its own "
        f"inverse error {report.local[block]:.3g})"
        if block is not None else "no single block's rebuilt input exceeds it"
    )
    message = (
        f"flowkit.Sequential(memory_saving=True): the input rebuilt for the first block is off "
        f"by {drift:.3g} relative to the real input (tolerance {tolerance:.3g}), so the "
        f"gradients are wrong; {where}. Make that block's inverse stable (a smaller coupling "
        "clamp, well-conditioned weights, float64), or train it with memory_saving=False; "
        "sequential.drift has the per-block report"
    )
    if OnDrift(run.sequential.on_drift) is OnDrift.RAISE:
        raise ReconstructionError(message)
    warnings.warn(message, ReconstructionWarning, stacklevel=2)


def reversible_forward(
    sequential: torch.nn.Module, x: State, context: Context = None
) -> tuple[State, Tensor]:
    """Run a :class:`flowkit.Sequential` forward in memory-saving mode (see the module doc)."""
    tensors = state_tensors(x)
    contexts = context_tensors(context)
    params = [p for p in sequential.parameters() if p.requires_grad]
    cuda_devices = sorted(
        {t.device.index or 0 for t in (*tensors, *contexts, *params) if t.is_cuda}
    )
    autocast = {
        device: (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        for device in _AUTOCAST_DEVICES
    }
    blocks, names = sequential.chain()
    run = _Run(
        sequential=sequential,
        blocks=blocks,
        names=names,
        input_is_tuple=not isinstance(x, Tensor),
        n_state=len(tensors),
        context=context,
        n_context=len(contexts),
        params=params,
        cuda_devices=cuda_devices,
        autocast=autocast,
        debug=is_debug(),
    )
    *outputs, logdet = _ReversibleChain.apply(run, *tensors, *contexts, *params)
    return _structured(tuple(outputs), run.output_is_tuple), logdet
