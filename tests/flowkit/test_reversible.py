"""The memory-saving engine against plain autograd on the same weights and inputs."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit import layers
from flowkit.testing import perturb_parameters_


def subnet(c_in: int, c_out: int, dropout: float = 0.0) -> nn.Module:
    return layers.ConvSubnet(c_in, c_out, hidden=8, kernel_size=3, dropout=dropout)


def coupling_stack(depth: int, channels: int = 4, **kwargs) -> list[flowkit.Flow]:
    blocks = []
    for _ in range(depth):
        blocks += [
            layers.AffineCoupling(channels, lambda a, b: subnet(a, b, **kwargs)),
            layers.InvConv1x1(channels),
        ]
    return blocks


def twins(
    blocks: list[flowkit.Flow],
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    scale: float = 0.1,
) -> tuple[flowkit.Sequential, ...]:
    """The same network twice: plain autograd and memory-saving (float64: the engine is exact,
    so structural tests compare to 1e-10 and any mistake shows)."""
    plain = perturb_parameters_(flowkit.Sequential(*blocks), scale=scale, seed=seed).to(dtype)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    return plain, saving


EXACT = 1e-10


def loss_of(y, logdet: Tensor) -> Tensor:
    tensors = y if isinstance(y, tuple) else (y,)
    return sum(0.5 * t.square().sum() for t in tensors) - logdet.sum()


def run(flow: flowkit.Flow, x):
    y, logdet = flow(x)
    loss = loss_of(y, logdet)
    loss.backward()
    return loss.detach(), y


def assert_close_relative(actual: Tensor, expected: Tensor, rtol: float, msg: str = "") -> None:
    """Equal up to ``rtol`` relative to the largest entry (rounding drift is not per entry)."""
    atol = rtol * float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=msg or None)


def assert_same_gradients(plain: nn.Module, saving: nn.Module, rtol: float) -> None:
    """Every gradient equal up to ``rtol`` relative to the largest gradient entry of the model
    (a gradient that is zero up to rounding, e.g. of a freshly initialized ActNorm's scale, is
    compared at the model's scale, not its own)."""
    scale = max(
        (float(p.grad.abs().max()) for p in plain.parameters() if p.grad is not None),
        default=0.0,
    )
    for (name, p), q in zip(plain.named_parameters(), saving.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=rtol, atol=rtol * scale, msg=name)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_gradients_equal_plain_autograd(dtype: torch.dtype, rtol: float) -> None:
    plain, saving = twins([layers.ActNorm(4)] + coupling_stack(8), dtype=dtype)
    x = torch.randn(2, 4, 6, 6, dtype=dtype)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    loss1, _ = run(plain, x1)
    loss2, _ = run(saving, x2)
    assert_close_relative(loss2, loss1, rtol)
    assert_close_relative(x2.grad, x1.grad, rtol)
    assert_same_gradients(plain, saving, rtol)


def test_logdet_gradient_path_alone() -> None:
    plain, saving = twins(coupling_stack(3))
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    grads = []
    for flow in (plain, saving):
        _, logdet = flow(x)
        grads.append(
            torch.autograd.grad(logdet.sum(), list(flow.parameters()), materialize_grads=True)
        )
    for g_plain, g_saving in zip(*grads, strict=True):
        assert_close_relative(g_saving, g_plain, EXACT)


def test_autograd_grad_and_only_some_outputs_used() -> None:
    plain, saving = twins(coupling_stack(2) + [flowkit.Split([1, 3])])
    x = torch.randn(2, 4, 4, 4, requires_grad=True, dtype=torch.float64)
    results = []
    for flow in (plain, saving):
        (first, _), _ = flow(x)
        results.append(torch.autograd.grad(first.sum(), [x, *flow.parameters()]))
    for g_plain, g_saving in zip(*results, strict=True):
        assert_close_relative(g_saving, g_plain, EXACT)


def test_double_backward_is_a_clear_error() -> None:
    _, saving = twins(coupling_stack(1))
    x = torch.randn(1, 4, 4, 4, requires_grad=True, dtype=torch.float64)
    y, logdet = saving(x)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss_of(y, logdet), x, create_graph=True)


def test_tuple_states_nested_sequentials_and_frozen_parameters() -> None:
    inner = flowkit.Sequential(*coupling_stack(2))
    per_scale = flowkit.Parallel(
        layers.AffineCoupling(4, subnet), flowkit.Sequential(*coupling_stack(1))
    )
    plain, saving = twins([per_scale, flowkit.Parallel(inner, layers.ActNorm(4))])
    for flow in (plain, saving):
        flow.blocks[0].flows[0].subnet.conv1.requires_grad_(False)
    x = (
        torch.randn(2, 4, 8, 8, dtype=torch.float64),
        torch.randn(2, 4, 4, 4, dtype=torch.float64, requires_grad=True),
    )
    run(plain, x)
    x_grad = x[1].grad.clone()
    x[1].grad = None
    run(saving, x)
    assert_close_relative(x[1].grad, x_grad, EXACT)
    assert_same_gradients(plain, saving, EXACT)
    assert saving.blocks[0].flows[0].subnet.conv1.weight.grad is None


class CountingFlow(flowkit.Flow):
    """A scaling whose training forward counts its side effects, as running statistics do."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.5))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not flowkit.is_recomputing():
            self.updates += 1
        return x * self.scale, self.scale.log().expand(x.shape[0]) * x[0].numel()

    def inverse(self, y: Tensor) -> Tensor:
        return y / self.scale


def test_training_state_updated_exactly_once_per_step() -> None:
    plain, saving = twins([CountingFlow(), *coupling_stack(2), layers.ActNorm(4), CountingFlow()])
    x = torch.randn(3, 4, 4, 4, dtype=torch.float64)
    for flow in (plain, saving):
        run(flow, x)
        run(flow, x)
        assert [int(b.updates) for b in flow if isinstance(b, CountingFlow)] == [2, 2]
    torch.testing.assert_close(saving[-2].bias, plain[-2].bias)
    assert_same_gradients(plain, saving, EXACT)


def test_dropout_sees_the_same_random_numbers() -> None:
    plain, saving = twins(coupling_stack(3, dropout=0.5))
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    for flow in (plain, saving):
        torch.manual_seed(123)
        run(flow, x)
    assert_same_gradients(plain, saving, EXACT)


def test_bfloat16_autocast_on_cpu() -> None:
    plain, saving = twins(coupling_stack(3), dtype=torch.float32)
    x = torch.randn(2, 4, 8, 8)
    dtypes: list[torch.dtype] = []
    for block in saving:
        if isinstance(block, layers.AffineCoupling):
            block.subnet.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    for flow in (plain, saving):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y, logdet = flow(x)
        assert y.dtype == torch.float32, "the invertible path must stay in float32"
        dtypes.clear()
        loss_of(y, logdet).backward()
    # the replays run under the forward's autocast state, although backward runs outside it
    assert dtypes == [torch.bfloat16] * 3
    assert_same_gradients(plain, saving, 2e-2)


def test_a_parameter_shared_by_several_blocks_gets_all_its_gradient() -> None:
    shared = subnet(2, 4)
    blocks = [layers.AffineCoupling(4, lambda a, b: shared), layers.Reverse(4),
              layers.AffineCoupling(4, lambda a, b: shared), layers.InvConv1x1(4)]
    plain, saving = twins(blocks)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    run(plain, x)
    run(saving, x)
    assert_same_gradients(plain, saving, EXACT)


def test_inputs_without_grad_and_no_grad_mode() -> None:
    plain, saving = twins(coupling_stack(2))
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    run(plain, x)
    run(saving, x)
    assert_same_gradients(plain, saving, EXACT)
    with torch.no_grad():
        y, _ = saving(x)
    assert not y.requires_grad


class LeakyInverse(CountingFlow):
    """An inverse that is off by a relative 1e-3: the debug mode must point at it."""

    def inverse(self, y: Tensor) -> Tensor:
        return y / self.scale * (1 + 1e-3)


def test_debug_mode_reports_drift_per_block() -> None:
    blocks = coupling_stack(2) + [LeakyInverse()] + coupling_stack(1)
    _, saving = twins(blocks)
    saving.on_drift = "warn"
    with flowkit.debug_mode(), pytest.warns(flowkit.errors.ReconstructionWarning, match="block 4"):
        run(saving, torch.randn(2, 4, 4, 4, dtype=torch.float64))
    report = saving.drift
    assert len(report.local) == len(report.rebuilt) == len(blocks)
    assert report.worst_block() == 4 and report.local[4] > 5e-4
    assert all(d < 1e-5 for i, d in enumerate(report.local) if i != 4)
    assert all(d < 1e-5 for d in report.rebuilt[5:]) and min(report.rebuilt[:5]) > 1e-4


def test_drift_at_depth_64_is_bounded() -> None:
    blocks = coupling_stack(32)
    plain = perturb_parameters_(flowkit.Sequential(*blocks), scale=0.05, seed=1)
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    x = torch.randn(2, 4, 6, 6)
    with flowkit.debug_mode():
        run(saving, x)
    run(plain, x)
    assert max(saving.drift.rebuilt) < 3e-5  # measured 3e-6
    worst = max(
        float((q.grad - p.grad).abs().max() / p.grad.abs().max())
        for p, q in zip(plain.parameters(), saving.parameters(), strict=True)
    )
    assert worst < 1e-4  # measured 6e-6 relative to the largest gradient


def saved_bytes(flow: flowkit.Flow, x: Tensor) -> int:
    """Bytes of all tensors autograd keeps for backward during the forward."""
    total = 0

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, logdet = flow(x)
    loss_of(y, logdet).backward()
    return total


def test_saved_memory_does_not_grow_with_depth() -> None:
    x = torch.randn(2, 4, 16, 16, requires_grad=True, dtype=torch.float64)
    # Perturbed by 0.1, this depth-32 stack explodes (outputs ~1e13, drift 1e17: the drift
    # guard refuses it); 0.05 keeps it a stable flow.
    plain2, saving2 = twins(coupling_stack(2), scale=0.05)
    plain32, saving32 = twins(coupling_stack(32), scale=0.05)
    assert saved_bytes(saving32, x) <= 1.1 * saved_bytes(saving2, x)
    ratio = saved_bytes(plain32, x) / saved_bytes(plain2, x)
    assert 12 < ratio <= 16.5


def test_outputs_never_alias_the_input() -> None:
    """A chain of permutations may return its input (or a view): the engine hands back a copy,
    so an in-place change of the output cannot reach the caller's input."""
    for blocks in ([flowkit.Identity()], [flowkit.Split([1, 3])], [layers.Reverse(4)]):
        flow = flowkit.Sequential(*blocks, memory_saving=True)
        x = torch.randn(2, 4, 3, 3)
        before = x.clone()
        with torch.enable_grad():
            y, _ = flow(x)
        for t in y if isinstance(y, tuple) else (y,):
            t.add_(1)
        assert torch.equal(x, before)
