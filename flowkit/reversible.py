"""The memory-saving backprop engine: activations are rebuilt from outputs during backward.

One ``autograd.Function`` spans a whole :class:`flowkit.Sequential`. Its forward runs the blocks
without recording and saves only the final output. Its backward walks the blocks in reverse:
each block rebuilds its input from its output (:meth:`flowkit.Flow.rebuild`: ``inverse``, then a
replay of ``forward`` with autograd recording, or a fused step in coupling layers), and the
gradient is backpropagated through that block alone. Activation memory is that of one block.

Guarantees, each tested against plain autograd:
- the replay runs under :func:`flowkit.core.recomputing`, so data-dependent inits and running
  statistics are updated once per step (in the real forward), never again in the replay;
- with ``preserve_rng_state`` each block replays with the random state of its forward (dropout
  draws the same mask), and under the autocast state of the forward;
- no host syncs on the hot path; :func:`flowkit.debug_mode` records each block's rebuild drift.

References:
    Gomez et al., "The Reversible Residual Network: Backpropagation Without Storing
    Activations", arXiv:1707.04585.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .core import State, replay_rng, state_tensors, zero_logdet
from .debug import check_finite, is_debug

__all__ = ["DriftReport", "reversible_forward"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


@dataclass
class DriftReport:
    """How exactly each block's input was rebuilt in a memory-saving backward (debug mode).

    Both lists are in forward order, one relative error ``max|error| / max|true input|`` per
    block.

    Attributes:
        rebuilt: the rebuilt input against the true one: what the gradients were computed at,
            including the error carried over from the blocks after it.
        local: the block's own inverse applied to its true output: large values point at the
            block whose inverse is unstable.
    """

    rebuilt: list[float]
    local: list[float]

    def worst_block(self) -> int:
        """The index of the block with the largest local inverse error."""
        return max(range(len(self.local)), key=self.local.__getitem__)


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
    input_is_tuple: bool
    n_state: int
    params: list[torch.nn.Parameter]
    cuda_devices: list[int]
    autocast: dict[str, tuple[bool, torch.dtype]]
    rng: list[_RngState] = field(default_factory=list)
    output_is_tuple: bool = False
    debug_inputs: list[State] = field(default_factory=list)


def _structured(tensors: tuple[Tensor, ...], is_tuple: bool) -> State:
    return tuple(tensors) if is_tuple else tensors[0]


def _detached(state: State) -> State:
    tensors = tuple(t.detach() for t in state_tensors(state))
    return _structured(tensors, not isinstance(state, Tensor))


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


class _ReversibleChain(torch.autograd.Function):
    """Forward without activations; backward by rebuilding inputs block by block."""

    @staticmethod
    def forward(ctx, run: _Run, *inputs: Tensor) -> tuple[Tensor, ...]:
        state = _structured(inputs[: run.n_state], run.input_is_tuple)
        input_ids = {id(t) for t in inputs}
        logdet = zero_logdet(state)
        for index, block in enumerate(run.sequential.blocks):
            if run.sequential.preserve_rng_state:
                run.rng.append(_RngState.capture(run.cuda_devices))
            if is_debug():
                run.debug_inputs.append(_detached(state))
            state, block_logdet = block(state)
            logdet = logdet + block_logdet
            if is_debug():
                check_finite(state, logdet, f"block {index} ({type(block).__name__})")
        # An output that aliases an input or is a view would confuse autograd's bookkeeping.
        outputs = tuple(
            t.clone() if id(t) in input_ids or t._is_view() else t for t in state_tensors(state)
        )
        run.output_is_tuple = not isinstance(state, Tensor)
        ctx.run = run
        ctx.save_for_backward(*outputs)
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
        grad_state, grad_logdet = list(grads[:-1]), grads[-1]
        state = _structured(tuple(t.detach() for t in ctx.saved_tensors), run.output_is_tuple)
        param_index = {id(p): i for i, p in enumerate(run.params)}
        param_grads: list[Tensor | None] = [None] * len(run.params)
        rebuilt_drift: list[float] = []
        local_drift: list[float] = []
        true_output = state
        blocks = run.sequential.blocks
        for index in reversed(range(len(blocks))):
            block = blocks[index]
            with _replaying(run, index):
                rebuilt = block.rebuild(state)
            leaves = [t for t in rebuilt.leaves if t.requires_grad]
            block_params = [p for p in block.parameters() if id(p) in param_index]
            outputs, grad_outputs = [], []
            for out, grad in zip((*state_tensors(rebuilt.outputs), rebuilt.logdet),
                                 (*grad_state, grad_logdet), strict=False):
                if out.requires_grad:
                    outputs.append(out)
                    grad_outputs.append(grad.to(out.dtype))
            wrt = leaves + block_params
            found = list(
                torch.autograd.grad(outputs, wrt, grad_outputs, allow_unused=True)
                if outputs and wrt
                else [None] * len(wrt)
            )
            for p, g in zip(block_params, found[len(leaves):], strict=False):
                if g is not None:
                    i = param_index[id(p)]
                    param_grads[i] = g if param_grads[i] is None else param_grads[i] + g
            leaf_grads = iter(found[: len(leaves)])
            grad_leaves = [
                _or_zeros(next(leaf_grads) if t.requires_grad else None, t)
                for t in rebuilt.leaves
            ]
            inputs = state_tensors(rebuilt.inputs)
            grad_state = rebuilt.merge(grad_leaves) if rebuilt.merge else grad_leaves
            if run.debug_inputs:
                true_input = run.debug_inputs[index]
                rebuilt_drift.append(_relative_drift(inputs, state_tensors(true_input)))
                with torch.no_grad(), _replaying(run, index):
                    local = state_tensors(block.inverse(true_output))
                local_drift.append(_relative_drift(local, state_tensors(true_input)))
                true_output = true_input
            state = _detached(rebuilt.inputs)
        if run.debug_inputs:
            run.sequential.drift = DriftReport(rebuilt_drift[::-1], local_drift[::-1])
        wanted = ctx.needs_input_grad[1 : 1 + run.n_state]
        input_grads = [g if need else None for g, need in zip(grad_state, wanted, strict=True)]
        return (None, *input_grads, *param_grads)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _relative_drift(rebuilt: tuple[Tensor, ...], true: tuple[Tensor, ...]) -> float:
    """max |rebuilt - true| / max |true| over a block's input tensors (debug mode only)."""
    error = max(float((r.detach() - t).abs().max()) for r, t in zip(rebuilt, true, strict=False))
    scale = max(float(t.abs().max()) for t in true)
    return error / max(scale, torch.finfo(true[0].dtype).tiny)


def reversible_forward(sequential: torch.nn.Module, x: State) -> tuple[State, Tensor]:
    """Run a :class:`flowkit.Sequential` forward in memory-saving mode (see the module doc)."""
    tensors = state_tensors(x)
    params = [p for p in sequential.parameters() if p.requires_grad]
    cuda_devices = sorted({t.device.index or 0 for t in (*tensors, *params) if t.is_cuda})
    autocast = {
        device: (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        for device in _AUTOCAST_DEVICES
    }
    run = _Run(
        sequential=sequential,
        input_is_tuple=not isinstance(x, Tensor),
        n_state=len(tensors),
        params=params,
        cuda_devices=cuda_devices,
        autocast=autocast,
    )
    *outputs, logdet = _ReversibleChain.apply(run, *tensors, *params)
    return _structured(tuple(outputs), run.output_is_tuple), logdet
