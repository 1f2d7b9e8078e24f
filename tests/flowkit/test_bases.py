"""Learnable bases and the density-model essentials: rsample, sample_and_log_prob, temperature."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flowkit
from flowkit import ConditionalDiagonalGaussian, DiagonalGaussian, NormalizingFlow, layers
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst


def spline_flow(features: int = 3, context_channels: int = 0) -> flowkit.Sequential:
    blocks = []
    for k in range(2):
        blocks += [
            layers.RQSplineCoupling(features, lambda i, o: layers.MLPSubnet(i, o, hidden=8),
                                    bins=4, context_channels=context_channels),
            layers.Permute(features, seed=k),
        ]
    return flowkit.Sequential(layers.ActNorm(features), *blocks)


@settings(max_examples=10)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), seed=fst.seeds())
def test_diagonal_gaussian_log_prob_is_the_normal_density(shape, seed) -> None:
    base = perturb_parameters_(DiagonalGaussian(shape), scale=0.5, seed=seed).double()
    z = torch.randn(3, *shape, dtype=torch.float64)
    expected = torch.distributions.Normal(base.mean, base.log_std.exp()).log_prob(z)
    torch.testing.assert_close(base.log_prob(z), expected.flatten(1).sum(1), rtol=1e-12, atol=0)


def test_samples_have_the_tempered_moments() -> None:
    base = DiagonalGaussian((2,))
    with torch.no_grad():
        base.mean.copy_(torch.tensor([1.0, -2.0]))
        base.log_std.copy_(torch.tensor([0.0, 1.0]))
    z = base.sample(40_000, temperature=0.5).detach()
    torch.testing.assert_close(z.mean(0), base.mean.detach(), atol=0.03, rtol=0)
    std = 0.5 * base.log_std.exp().detach()
    torch.testing.assert_close(z.std(0), std, rtol=0.02, atol=0)
    torch.manual_seed(1)
    reference = torch.randn(5, 3, 2)
    torch.manual_seed(1)
    tempered = flowkit.StandardNormal((3, 2)).sample(5, temperature=0.3)
    torch.testing.assert_close(tempered, 0.3 * reference)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_and_log_prob_agrees_with_log_prob(temperature: float) -> None:
    model = NormalizingFlow(spline_flow(), DiagonalGaussian((3,)))
    model = perturb_parameters_(model, scale=0.3, seed=4).double()
    model.flow(torch.randn(64, 3, dtype=torch.float64))  # ActNorm's data-dependent init
    model.eval()
    x, log_prob = model.sample_and_log_prob(50, temperature=temperature)
    assert x.shape == (50, 3) and log_prob.shape == (50,)
    torch.testing.assert_close(log_prob, model.log_prob(x), rtol=1e-10, atol=1e-10)


def test_rsample_carries_gradients_to_flow_and_base() -> None:
    model = perturb_parameters_(NormalizingFlow(spline_flow(), DiagonalGaussian((3,))), seed=2)
    x = model.rsample(16)
    assert x.requires_grad
    x.square().sum().backward()
    assert model.base.mean.grad.abs().max() > 0
    couplings = [m for m in model.flow.modules() if isinstance(m, layers.RQSplineCoupling)]
    assert all(p.grad is not None for c in couplings for p in c.parameters())
    assert not model.sample(4).requires_grad
    # Reverse KL to a target density trains through sample_and_log_prob.
    _, log_prob = model.sample_and_log_prob(8)
    assert log_prob.requires_grad


def test_conditional_base_and_conditional_flow() -> None:
    base = ConditionalDiagonalGaussian((3,), nn.Linear(2, 6))
    model = perturb_parameters_(NormalizingFlow(spline_flow(context_channels=2), base), seed=3)
    model = model.double().eval()
    context = torch.randn(7, 2, dtype=torch.float64)
    x, log_prob = model.sample_and_log_prob(7, context=context)
    torch.testing.assert_close(log_prob, model.log_prob(x, context), rtol=1e-10, atol=1e-10)
    mean, log_std = base.parameters_for(context)
    z, logdet = model.flow(x, context=context)
    expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(z).sum(1) + logdet
    torch.testing.assert_close(model.log_prob(x, context), expected, rtol=1e-12, atol=1e-12)
    # An unconditional flow on a conditional base takes the context too.
    only_base = NormalizingFlow(layers.ActNorm(3), ConditionalDiagonalGaussian((3,),
                                                                                nn.Linear(2, 6)))
    assert only_base.log_prob(torch.randn(7, 3), torch.randn(7, 2)).shape == (7,)


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        NormalizingFlow(layers.ActNorm(3), DiagonalGaussian((3,))).sample(2, temperature=0.0)
    with pytest.raises(flowkit.FlowInputError, match="got a latent of shape"):
        DiagonalGaussian((3,)).log_prob(torch.randn(2, 4))
    base = ConditionalDiagonalGaussian((3,), nn.Linear(2, 5))
    with pytest.raises(ValueError, match="expected \\(4, 6\\)"):
        base.log_prob(torch.randn(4, 3), torch.randn(4, 2))
    base = ConditionalDiagonalGaussian((3,), nn.Linear(2, 6))
    with pytest.raises(ValueError, match="one sample per context row"):
        base.sample(3, torch.randn(4, 2))
    with pytest.raises(flowkit.FlowInputError, match="needs context"):
        NormalizingFlow(layers.ActNorm(3), base).log_prob(torch.randn(4, 3))
    with pytest.raises(flowkit.FlowInputError, match="context would be ignored"):
        NormalizingFlow(layers.ActNorm(3)).log_prob(torch.randn(4, 3), torch.randn(4, 2))
