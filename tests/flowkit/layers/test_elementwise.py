"""Elementwise bijections: the squeezed logit on bounded data, the learnable affine map."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit
from flowkit.layers import ElementwiseAffine, Logit
from flowkit.testing import check_flow, perturb_parameters_
from flowkit.testing import strategies as fst


@settings(max_examples=20)
@given(
    shape=fst.image_shapes(channels=st.integers(1, 3), max_size=4),
    alpha=st.sampled_from([0.0, 1e-6, 0.05, 0.3]),
    dtype=fst.dtypes(),
    seed=fst.seeds(),
)
def test_logit_is_exact_on_the_unit_interval(shape, alpha, dtype, seed) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=generator, dtype=dtype).clamp(0.01, 0.99)
    report = check_flow(Logit(alpha), x)
    if dtype == torch.float64:
        assert report.logdet_error < 1e-10


def test_logit_matches_its_formula_and_accepts_the_closed_interval() -> None:
    x = torch.tensor([[0.0, 0.25, 1.0]], dtype=torch.float64)
    y, logdet = Logit(0.05)(x)
    p = 0.05 + 0.9 * x
    torch.testing.assert_close(y, torch.log(p / (1 - p)))
    torch.testing.assert_close(logdet, (torch.log(0.9 / (p * (1 - p)))).sum(1, keepdim=False))
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(("alpha", "value"), [(0.05, 1.06), (0.05, -0.06), (0.0, 0.0), (0.0, 1.0)])
def test_logit_refuses_values_outside_its_domain(alpha: float, value: float) -> None:
    with pytest.raises(RuntimeError, match="outside"):
        Logit(alpha)(torch.tensor([[0.5, value]]))


def test_sigmoid_is_the_inverse_layer() -> None:
    sigmoid = flowkit.Inverse(Logit(0.0))
    y, _ = sigmoid(torch.randn(3, 4, dtype=torch.float64))
    assert bool(((y > 0) & (y < 1)).all())
    report = check_flow(sigmoid, torch.randn(3, 4, dtype=torch.float64), modes=("eval",))
    assert report.logdet_error < 1e-10


@pytest.mark.parametrize("shape", [(4,), (3, 1, 1), (3, 4, 4), (1, 4)])
def test_elementwise_affine_broadcast_shapes(shape) -> None:
    layer = perturb_parameters_(ElementwiseAffine(shape), scale=0.5, seed=1)
    x = torch.randn(2, *((4,) if len(shape) == 1 else (3, 4, 4)), dtype=torch.float64)
    if len(shape) == 2:
        x = torch.randn(2, 3, 4, dtype=torch.float64)
    report = check_flow(layer, x)
    assert report.logdet_error < 1e-10


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="0 <= alpha < 0.5"):
        Logit(0.5)
    with pytest.raises(flowkit.FlowInputError, match="does not broadcast"):
        ElementwiseAffine((3, 4, 4))(torch.randn(2, 3, 1, 1))
    with pytest.raises(ValueError, match="non-empty positive shape"):
        ElementwiseAffine(())
