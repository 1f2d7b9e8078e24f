"""One comparison for every memory-saving test of the density layers: same weights, same input,
plain autograd against the engine, every gradient (input, context, parameters) compared whole."""

from __future__ import annotations

import copy
from collections.abc import Callable

from torch import Tensor

import flowkit

from .test_reversible import assert_close_relative, loss_of


def saving_copy(plain: flowkit.Flow) -> flowkit.Flow:
    """A deep copy with every ``Sequential`` inside switched to memory saving."""
    saving = copy.deepcopy(plain)
    for module in saving.modules():
        if isinstance(module, flowkit.Sequential):
            module.memory_saving = True
    return saving


def gradients(
    flow: flowkit.Flow, x: Tensor, context: Tensor | None, loss: Callable = loss_of,
    before_backward: Callable[[], None] = lambda: None,
) -> list[Tensor | None]:
    """Gradients of ``loss(y, logdet)`` w.r.t. ``x``, the context (if any), every parameter."""
    inputs = [x.clone().requires_grad_()]
    if context is not None:
        inputs.append(context.clone().requires_grad_())
    y, logdet = flow(inputs[0], **({"context": inputs[1]} if context is not None else {}))
    before_backward()
    loss(y, logdet).backward()
    return [t.grad for t in inputs] + [p.grad for p in flow.parameters()]


def assert_saving_matches_plain(
    plain: flowkit.Flow, x: Tensor, context: Tensor | None = None, rtol: float = 1e-10,
    before_backward: Callable[[], None] = lambda: None,
) -> list[Tensor | None]:
    """Run ``plain`` and its memory-saving copy; assert equal gradients; return the plain ones.

    ``before_backward`` runs between the memory-saving forward and its backward (to reset a
    call counter, say).
    """
    expected = gradients(plain, x, context)
    actual = gradients(saving_copy(plain), x, context, before_backward=before_backward)
    for index, (g_saving, g_plain) in enumerate(zip(actual, expected, strict=True)):
        assert (g_saving is None) == (g_plain is None), index
        if g_plain is not None:
            assert_close_relative(g_saving, g_plain, rtol, msg=f"gradient {index}")
    return expected
