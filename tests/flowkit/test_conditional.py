"""Conditioning as a first-class input: context through every composite and the engine."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

import flowkit
from flowkit import layers
from flowkit.errors import FlowInputError
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst

from .test_reversible import assert_close_relative, loss_of

CONTEXT = 3


def subnet(c_in: int, c_out: int) -> nn.Module:
    return layers.ConvSubnet(c_in, c_out, hidden=8, kernel_size=3)


def conditional_stack(depth: int, channels: int = 4) -> list[flowkit.Flow]:
    blocks: list[flowkit.Flow] = [layers.ActNorm(channels)]
    for k in range(depth):
        coupling = layers.AffineCoupling if k % 2 == 0 else layers.AdditiveCoupling
        blocks += [
            coupling(channels, subnet, context_channels=CONTEXT),
            layers.InvConv1x1(channels),
        ]
    return blocks


class Encoder(nn.Module):
    """Computes the context from a conditioning image: its gradient must reach these weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, CONTEXT, 3, padding=1)

    def forward(self, image: Tensor) -> Tensor:
        return torch.tanh(self.conv(image))


def twin_models(depth: int, seed: int, dtype: torch.dtype):
    torch.manual_seed(seed)
    flow = perturb_parameters_(flowkit.Sequential(*conditional_stack(depth)), 0.1, seed)
    model = nn.ModuleDict({"flow": flow, "encoder": Encoder()}).to(dtype)
    saving = copy.deepcopy(model)
    saving["flow"].memory_saving = True
    return model, saving


def step(model: nn.ModuleDict, x: Tensor, image: Tensor, vector: bool) -> tuple[Tensor, ...]:
    context = model["encoder"](image)
    if vector:
        context = context.mean((2, 3))
    y, logdet = model["flow"](x, context=context)
    loss_of(y, logdet).backward()
    return x.grad, image.grad


@settings(max_examples=6, deadline=None)
@given(seed=fst.seeds(), dtype=fst.dtypes(), vector=st.booleans(), size=st.integers(2, 6))
def test_conditional_flow_trains_with_memory_saving_as_plain_autograd(
    seed: int, dtype: torch.dtype, vector: bool, size: int
) -> None:
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    plain, saving = twin_models(3, seed, dtype)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, size, size, generator=generator, dtype=dtype)
    image = torch.randn(2, 2, size, size, generator=generator, dtype=dtype)
    expected = step(plain, x.clone().requires_grad_(), image.clone().requires_grad_(), vector)
    actual = step(saving, x.clone().requires_grad_(), image.clone().requires_grad_(), vector)
    for a, e in zip(actual, expected, strict=True):
        assert_close_relative(a, e, rtol)
    for (name, p), q in zip(plain.named_parameters(), saving.parameters(), strict=True):
        assert p.grad is not None and q.grad is not None, name
        assert_close_relative(q.grad, p.grad, rtol, msg=name)


def test_the_context_is_used_and_inverted_with() -> None:
    flow = perturb_parameters_(flowkit.Sequential(*conditional_stack(2)).double(), 0.3)
    flow.requires_grad_(False)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    c1, c2 = torch.randn(2, 3, CONTEXT, 5, 5, dtype=torch.float64)
    y1, logdet1 = flow(x, context=c1)
    y2, _ = flow(x, context=c2)
    assert float((y1 - y2).abs().max()) > 1e-3, "the context changed nothing"
    x_back, inverse_logdet = flow.inverse_and_logdet(y1, context=c1)
    assert_close_relative(x_back, x, 1e-12)
    assert_close_relative(inverse_logdet, -logdet1, 1e-12)
    assert_close_relative(flow.inverse(y1, context=c1), x, 1e-12)
    assert float((flow.inverse(y1, context=c2) - x).abs().max()) > 1e-3


def test_parallel_splits_a_tuple_and_broadcasts_a_tensor() -> None:
    def conditional(c: int) -> flowkit.Flow:
        return layers.AffineCoupling(c, subnet, context_channels=CONTEXT)

    flow = perturb_parameters_(
        flowkit.Parallel(conditional(4), layers.ActNorm(4), conditional(4)), 0.3
    ).double()
    x = tuple(torch.randn(2, 4, 4 >> k, 4 >> k, dtype=torch.float64) for k in range(3))
    contexts = (torch.randn(2, CONTEXT, 4, 4), None, torch.randn(2, CONTEXT))
    contexts = tuple(None if c is None else c.double() for c in contexts)
    y, logdet = flow(x, context=contexts)
    expected = flow.flows[2](x[2], context=contexts[2])[0]
    torch.testing.assert_close(y[2], expected, rtol=0, atol=0)
    assert_close_relative(flowkit.Inverse(flow)(y, context=contexts)[0][0], x[0], 1e-12)
    vector = torch.randn(2, CONTEXT, dtype=torch.float64)
    y, _ = flow(x, context=vector)
    torch.testing.assert_close(y[0], flow.flows[0](x[0], context=vector)[0], rtol=0, atol=0)
    with pytest.raises(FlowInputError, match="one entry per element"):
        flow(x, context=contexts[:2])
    with pytest.raises(FlowInputError, match="element 1"):
        flow(x, context=(contexts[0], contexts[0], contexts[2]))


def test_normalizing_flow_log_prob_and_sample_take_the_context() -> None:
    flow = perturb_parameters_(flowkit.Sequential(*conditional_stack(2)), 0.3).eval()
    model = flowkit.NormalizingFlow(flow, flowkit.StandardNormal((4, 3, 3)))
    context = torch.randn(5, CONTEXT)
    x = model.sample(5, context=context)
    assert x.shape == (5, 4, 3, 3)
    z, logdet = flow(x, context=context)
    expected = model.base.log_prob(z) + logdet
    torch.testing.assert_close(model.log_prob(x, context=context), expected)


def test_a_context_is_never_ignored() -> None:
    x = torch.randn(2, 4, 3, 3)
    plain = flowkit.Sequential(layers.AffineCoupling(4, subnet), layers.ActNorm(4))
    for flow in (plain, plain[0], flowkit.Inverse(plain), flowkit.Parallel(plain)):
        state = (x,) if isinstance(flow, flowkit.Parallel) else x
        with pytest.raises(FlowInputError, match="no conditional layer"):
            flow(state, context=torch.randn(2, CONTEXT, 3, 3))
    with pytest.raises(FlowInputError, match="no conditional layer"):
        plain.inverse(x, context=torch.randn(2, CONTEXT, 3, 3))
    with pytest.raises(FlowInputError, match="no conditional layer"):
        flowkit.NormalizingFlow(plain).log_prob(x, context=torch.randn(2, CONTEXT))
    for method in (plain[0].inverse_and_logdet, plain[0].rebuild, plain[0].inverse):
        with pytest.raises(FlowInputError, match="no conditional layer"):
            method(x, context=torch.randn(2, CONTEXT))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (None, r"needs context= a Tensor \[2, 3, 5, 5\] or \[2, 3\], got no context"),
        (torch.randn(2, 2, 5, 5), r"got \(2, 2, 5, 5\)"),
        (torch.randn(2, CONTEXT, 4, 4), r"got \(2, 3, 4, 4\)"),
        (torch.randn(3, CONTEXT), r"got \(3, 3, 5, 5\)"),
        ((torch.randn(2, CONTEXT),), "got a tuple"),
    ],
)
def test_a_missing_or_misshapen_context_names_expected_and_actual(context, message) -> None:
    flow = flowkit.Sequential(layers.AffineCoupling(4, subnet, context_channels=CONTEXT))
    for memory_saving in (False, True):
        flow.memory_saving = memory_saving
        with pytest.raises(FlowInputError, match=message):
            flow(torch.randn(2, 4, 5, 5), context=context)


def test_context_channels_must_be_a_count() -> None:
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="context_channels"):
            layers.AffineCoupling(4, subnet, context_channels=bad)
