"""The Glow/RealNVP multi-scale builder: exact, memory-saving, conditional, with clear errors."""

from __future__ import annotations

import pytest
import torch

import flowkit
from flowkit.testing import check_flow, perturb_parameters_

from .plain_vs_saving import assert_saving_matches_plain


def test_latent_shapes_and_sampling() -> None:
    flow = flowkit.glow(3, levels=3, steps=1, hidden=8)
    shapes = flow.latent_shapes((3, 16, 16))
    assert shapes == ((6, 8, 8), (12, 4, 4), (48, 2, 2))
    model = flowkit.NormalizingFlow(flow, flowkit.StandardNormal(shapes)).eval()
    x = model.sample(2, temperature=0.5)
    assert x.shape == (2, 3, 16, 16)
    zs, _ = flow(x)
    assert tuple(tuple(z.shape[1:]) for z in zs) == shapes


@pytest.mark.parametrize(("memory_saving", "coupling"),
                         [(False, "affine"), (True, "affine"), (False, "spline")])
def test_exact_inverse_and_logdet(memory_saving: bool, coupling: str) -> None:
    flow = flowkit.glow(2, levels=2, steps=2, hidden=4, memory_saving=memory_saving,
                        coupling=coupling)
    flow = perturb_parameters_(flow, 0.2, seed=5)
    # check_flow's finite-difference gradient check can straddle a LeakyReLU kink of the
    # subnets (measured: 9e-3 at torch.manual_seed(0)'s input): an input away from kinks.
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    report = check_flow(flow, x)
    # Splines with nflows' default minimums are steeper (see RQSplineCoupling: conditioning).
    inverse_limit, logdet_limit = (1e-12, 1e-10) if coupling == "affine" else (1e-10, 1e-8)
    assert report.inverse_error < inverse_limit and report.logdet_error < logdet_limit


def test_memory_saving_gradients_equal_plain_with_a_context() -> None:
    plain = perturb_parameters_(
        flowkit.glow(1, levels=2, steps=2, hidden=6, context_channels=3), 0.1, seed=2
    ).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    context = torch.randn(4, 3, dtype=torch.float64)
    _, context_grad, *_ = assert_saving_matches_plain(plain, x, context)
    assert context_grad.abs().max() > 0


def test_errors_name_the_problem() -> None:
    flow = flowkit.glow(1, levels=2, steps=1, hidden=4)
    with pytest.raises(flowkit.FlowInputError, match="multiple of 2"):
        flow(torch.randn(1, 1, 6, 6))
    with pytest.raises(flowkit.FlowInputError, match="tuple of 2 tensors"):
        flow.inverse((torch.randn(1, 2, 4, 4),))
    with pytest.raises(TypeError, match="not a flowkit.Flow"):
        flowkit.MultiScaleFlow(torch.nn.Identity())
    with pytest.raises(ValueError, match="levels >= 1"):
        flowkit.glow(1, levels=0)
    with pytest.raises(ValueError, match="unknown glow coupling 'additive'; choose one of"):
        flowkit.glow(1, coupling="additive")
