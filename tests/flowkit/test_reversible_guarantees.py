"""What the memory-saving engine never does silently: drop a gradient, change state, or hand
back gradients computed at a rebuilt input that left the true one."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit import layers
from flowkit.errors import ReconstructionError, ReconstructionWarning
from flowkit.testing import perturb_parameters_

from .test_reversible import EXACT, assert_close_relative, assert_same_gradients, loss_of, run


def bn_subnet(c_in: int, c_out: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, c_out, 3, padding=1),
    )


def bn_blocks() -> list[flowkit.Flow]:
    return [
        layers.AffineCoupling(4, bn_subnet), layers.InvConv1x1(4),
        layers.AdditiveCoupling(4, bn_subnet), layers.Reverse(4),
    ]


def assert_same_buffers(plain: nn.Module, saving: nn.Module) -> None:
    for (name, a), b in zip(plain.named_buffers(), saving.buffers(), strict=True):
        assert torch.equal(a, b), f"buffer {name}: {a} vs {b}"


@pytest.mark.parametrize("layout", ["flat", "nested", "nested-memory-saving"])
def test_batchnorm_in_a_subnet_is_updated_once_per_step(layout: str) -> None:
    torch.manual_seed(0)
    if layout == "flat":
        plain = flowkit.Sequential(*bn_blocks(), *bn_blocks())
    else:
        plain = flowkit.Sequential(
            flowkit.Sequential(*bn_blocks()), layers.ActNorm(4), flowkit.Sequential(*bn_blocks())
        )
    plain = perturb_parameters_(plain, 0.1).double()
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    if layout == "nested-memory-saving":
        saving[0].memory_saving = saving[2].memory_saving = True
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(3, 4, 5, 5, dtype=torch.float64, generator=generator)
        run(plain, x)
        run(saving, x)
        assert_same_buffers(plain, saving)
    norms = [m for m in saving.modules() if isinstance(m, nn.BatchNorm2d)]
    assert [int(m.num_batches_tracked) for m in norms] == [2] * 4
    # A conv bias before a BatchNorm has a zero gradient, up to rounding: compare all the
    # gradients as one vector.
    assert_close_relative(*(
        torch.cat([p.grad.flatten() for p in flow.parameters()]) for flow in (saving, plain)
    ), EXACT)


def test_pyramid_coupling_in_a_nested_sequential_updates_volume_norm_once() -> None:
    def stack() -> flowkit.Sequential:
        return flowkit.Sequential(
            layers.PyramidCoupling("dual", 0, 3, 2, kernel_size=3, target_size=(2, 2)),
            layers.PyramidCoupling("up", 0, 3, 2, kernel_size=3, volume_norm="spatial"),
        )

    torch.manual_seed(0)
    plain = perturb_parameters_(flowkit.Sequential(stack(), stack()), 0.2).double()
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        x = tuple(
            torch.randn(2, 2, 8 >> k, 8 >> k, dtype=torch.float64, generator=generator)
            for k in range(3)
        )
        run(plain, x)
        run(saving, x)
    for (name, a), b in zip(plain.named_buffers(), saving.buffers(), strict=True):
        if "running_mean" in name:
            assert_close_relative(b, a, 1e-12, msg=name)
    assert_same_gradients(plain, saving, EXACT)


class ReadsOutside(nn.Module):
    """A subnet that multiplies its output by a tensor it does not own."""

    def __init__(self, c_in: int, c_out: int, outside) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.__dict__["outside"] = outside  # not registered: read through a closure

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * self.outside()


class Parent(nn.Module):
    """A model whose parameter ``gain`` is used inside its flow's subnet (example 1)."""

    def __init__(self, memory_saving: bool) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((1, 4, 1, 1), 1.5))
        self.flow = flowkit.Sequential(
            layers.ActNorm(4),
            layers.AffineCoupling(4, lambda a, b: ReadsOutside(a, b, lambda: self.gain)),
            memory_saving=memory_saving,
        )


def test_a_parent_parameter_read_by_a_subnet_is_refused_by_name() -> None:
    x = torch.randn(2, 4, 5, 5)
    torch.manual_seed(0)
    plain = Parent(memory_saving=False)
    run(plain.flow, x)
    assert plain.gain.grad is not None and float(plain.gain.grad.abs().max()) > 0
    saving = Parent(memory_saving=True)
    y, logdet = saving.flow(x)
    with pytest.raises(
        RuntimeError,
        match=r"block 1 \(AffineCoupling\) depends on an nn.Parameter \(torch.float32\) of "
        r"shape \(1, 4, 1, 1\).*pass it as context=",
    ):
        loss_of(y, logdet).backward()


def test_an_encoder_output_captured_by_a_subnet_is_refused_by_name() -> None:
    features: dict[str, Tensor] = {}
    encoder = nn.Conv2d(3, 4, 3, padding=1)
    flow = flowkit.Sequential(
        layers.AffineCoupling(4, lambda a, b: ReadsOutside(a, b, lambda: features["map"])),
        layers.Reverse(4),
        memory_saving=True,
    )
    features["map"] = encoder(torch.randn(2, 3, 5, 5))
    y, logdet = flow(torch.randn(2, 4, 5, 5))
    with pytest.raises(RuntimeError, match=r"block 0 \(AffineCoupling\) depends on a tensor "
                       r"\(torch.float32\) computed by \w+ of shape \(2, 4, 5, 5\)"):
        loss_of(y, logdet).backward()
    # Without memory saving the same code trains the encoder: that is what was lost.
    flow.memory_saving = False
    features["map"] = encoder(torch.randn(2, 3, 5, 5))
    y, logdet = flow(torch.randn(2, 4, 5, 5))
    loss_of(y, logdet).backward()
    assert encoder.weight.grad is not None


def unstable_stack(depth: int = 32, scale: float = 0.2) -> flowkit.Sequential:
    """The issue's stack: ActNorm + 1x1 conv + affine coupling, float32, weights perturbed."""
    torch.manual_seed(0)
    blocks = []
    for _ in range(depth):
        blocks += [
            layers.ActNorm(4), layers.InvConv1x1(4),
            layers.AffineCoupling(4, lambda a, b: layers.ConvSubnet(a, b, hidden=8)),
        ]
    return perturb_parameters_(flowkit.Sequential(*blocks, memory_saving=True), scale, seed=0)


def test_an_unstable_stack_raises_naming_where_the_rebuild_left_the_truth() -> None:
    flow = unstable_stack()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    y, logdet = flow(x)
    with pytest.raises(ReconstructionError, match=r"block (\d+) \(\w+\)") as raised:
        loss_of(y, logdet).backward()
    report = flow.drift
    block = report.worst_block()
    assert f"block {block} (" in str(raised.value)
    assert not report.rebuilt[block] <= report.tolerance
    assert all(r <= report.tolerance for r in report.rebuilt[block + 1 :])
    # The block's own inverse is fine: the error starts there and is amplified before it.
    assert report.local[block] < 1e-5


def test_the_guard_warns_when_asked_and_takes_a_tolerance() -> None:
    flow = unstable_stack()
    flow.on_drift = "warn"
    x = torch.randn(2, 4, 8, 8)
    y, logdet = flow(x)
    with pytest.warns(ReconstructionWarning, match="relative to the real input"):
        loss_of(y, logdet).backward()
    healthy = unstable_stack(depth=4, scale=0.05)
    healthy.drift_tolerance = 0.0
    y, logdet = healthy(x)
    with pytest.raises(ReconstructionError, match="tolerance 0"):
        loss_of(y, logdet).backward()
    healthy.drift_tolerance = None
    y, logdet = healthy(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss_of(y, logdet).backward()
    assert healthy.drift is None
    with pytest.raises(ValueError, match="choose one of 'raise', 'warn'"):
        flowkit.Sequential(layers.ActNorm(4), on_drift="ignore")
    with pytest.raises(ValueError, match="drift_tolerance"):
        flowkit.Sequential(layers.ActNorm(4), drift_tolerance=-1.0)


def coupling_flow(kind: str) -> tuple[flowkit.Sequential, object, object]:
    """A memory-saving stack with three couplings of ``kind``, an input and a context."""
    torch.manual_seed(0)
    if kind.startswith("pyramid"):
        pyramid = kind.split("-")[1]
        blocks = [layers.PyramidCoupling(pyramid, 0, 3, 2, kernel_size=3) for _ in range(3)]
        x = tuple(torch.randn(2, 2, 8 >> k, 8 >> k) for k in range(3))
        return flowkit.Sequential(*blocks, memory_saving=True), x, None
    if kind == "cross-scale":
        # a CrossScaleBlock nested as one block: the engine walks its two couplings
        blocks = [layers.CrossScaleBlock(4, hidden=6), layers.CrossScaleCoupling(4, hidden=6)]
        x = tuple(torch.randn(2, 4, 8 >> k, 8 >> k) for k in range(3))
        return flowkit.Sequential(*blocks, memory_saving=True), x, None
    coupling = layers.AffineCoupling if kind.startswith("affine") else layers.AdditiveCoupling
    context_channels = 3 if kind.endswith("context") else 0
    blocks = []
    for _ in range(3):
        blocks += [
            coupling(4, lambda a, b: layers.ConvSubnet(a, b, 6), context_channels=context_channels),
            layers.InvConv1x1(4),
        ]
    context = torch.randn(2, 3, requires_grad=True) if context_channels else None
    # nested: the engine walks a nested Sequential block by block, with the fused rebuilds
    flow = flowkit.Sequential(blocks[0], flowkit.Sequential(*blocks[1:]), memory_saving=True)
    return flow, torch.randn(2, 4, 5, 5, requires_grad=True), context


@pytest.mark.parametrize(
    "kind",
    ["affine", "affine-context", "additive", "additive-context", "pyramid-up", "pyramid-down",
     "pyramid-dual", "cross-scale"],
)
def test_backward_evaluates_each_coupling_subnet_exactly_once(kind: str) -> None:
    flow, x, context = coupling_flow(kind)
    perturb_parameters_(flow, 0.1)
    couplings = [m for m in flow.modules() if hasattr(m, "subnet")]
    assert len(couplings) == 3
    for coupling in couplings:
        # the fused rebuild, not the default inverse-then-forward (which evaluates it twice)
        assert type(coupling).rebuild is not flowkit.Flow.rebuild
    calls = {id(c.subnet): 0 for c in couplings}
    replays: list[bool] = []

    def count(module: nn.Module, args, output) -> None:
        calls[id(module)] += 1
        replays.append(flowkit.is_recomputing())

    hooks = [c.subnet.register_forward_hook(count) for c in couplings]
    y, logdet = flow(x, **({} if context is None else {"context": context}))
    assert list(calls.values()) == [1, 1, 1] and replays == [False] * 3
    calls.update(dict.fromkeys(calls, 0))
    replays.clear()
    loss_of(y, logdet).backward()
    for hook in hooks:
        hook.remove()
    assert list(calls.values()) == [1, 1, 1], "backward must evaluate each subnet once"
    assert replays == [True] * 3, "the fused rebuild's subnet call is a replay"


def test_dropout_in_a_nested_sequential_replays_the_same_masks() -> None:
    def dropout_stack(depth: int) -> list[flowkit.Flow]:
        subnet = lambda a, b: layers.ConvSubnet(a, b, 8, dropout=0.5)  # noqa: E731
        return [layers.AffineCoupling(4, subnet) for _ in range(depth)]

    torch.manual_seed(0)
    plain = perturb_parameters_(flowkit.Sequential(
        flowkit.Sequential(*dropout_stack(2)), layers.Reverse(4),
        flowkit.Sequential(*dropout_stack(2), memory_saving=True),
        # Parallel rebuilds by inverse then forward: the random state must restart in between
        flowkit.Split([2, 2]), flowkit.Parallel(flowkit.Identity(), layers.ActNorm(2)),
    ), 0.1).double()
    plain[2].memory_saving = False
    saving = copy.deepcopy(plain)
    saving.memory_saving = saving[2].memory_saving = True
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    for flow in (plain, saving):
        torch.manual_seed(123)
        run(flow, x)
    assert_same_gradients(plain, saving, EXACT)


class DropoutScale(flowkit.Flow):
    """``y = x * (1 + 0.5 * mask)`` with a fresh dropout mask: exact only with the same mask."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(1.3))

    def _factor(self, x: Tensor) -> Tensor:
        mask = torch.nn.functional.dropout(torch.ones_like(x[:1]), 0.5, self.training)
        return self.weight * (1 + 0.5 * mask)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        factor = self._factor(x)
        return x * factor, factor.log().flatten(1).sum(1).expand(x.shape[0])

    def inverse(self, y: Tensor) -> Tensor:
        return y / self._factor(y)


def test_the_default_rebuild_restarts_the_random_state_between_inverse_and_forward() -> None:
    torch.manual_seed(0)
    plain = flowkit.Sequential(DropoutScale(), layers.Reverse(4), DropoutScale()).double()
    saving = copy.deepcopy(plain)
    saving.memory_saving = True
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for flow in (plain, saving):
        torch.manual_seed(5)
        run(flow, x)
    assert_same_gradients(plain, saving, EXACT)
