"""Rational-quadratic splines: exact inverse and logdet in float64, tails, the fused rebuild."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import flowkit
from flowkit.layers import MLPSubnet, RQSpline, RQSplineCoupling
from flowkit.layers.spline import SplineConfig, rq_spline, rq_spline_inverse
from flowkit.testing import check_flow, perturb_parameters_
from flowkit.testing import strategies as fst

from ..plain_vs_saving import assert_saving_matches_plain

configs = st.builds(
    SplineConfig,
    bins=st.integers(1, 10),
    bound=st.floats(0.5, 5.0),
)


def random_params(n: int, config: SplineConfig, scale: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, config.params, generator=generator, dtype=torch.float64)


@settings(max_examples=40)
@given(config=configs, seed=fst.seeds(), scale=st.floats(0.0, 1.0))
def test_inverse_and_log_derivative_exact_in_float64(config, seed, scale) -> None:
    params = random_params(500, config, scale, seed)
    x = config.bound * 1.3 * torch.randn(500, dtype=torch.float64,
                                         generator=torch.Generator().manual_seed(seed + 1))
    x.requires_grad_()
    y, log_derivative = rq_spline(x, params, config)
    (derivative,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(log_derivative, derivative.log(), rtol=0, atol=1e-10)
    x_back, log_inverse = rq_spline_inverse(y.detach(), params, config)
    torch.testing.assert_close(x_back, x.detach(), rtol=0, atol=1e-11 * config.bound)
    torch.testing.assert_close(log_inverse, -log_derivative.detach(), rtol=0, atol=1e-10)


@given(config=configs, dtype=fst.dtypes())
def test_zero_parameters_are_the_identity_and_invert_without_nan(config, dtype) -> None:
    # Every bin is linear here (a = 0 in the quadratic): the textbook root is 0/0.
    x = torch.linspace(-2 * config.bound, 2 * config.bound, 101, dtype=dtype)
    params = torch.zeros(101, config.params, dtype=dtype)
    y, log_derivative = rq_spline(x, params, config)
    x_back, log_inverse = rq_spline_inverse(x, params, config)
    eps = torch.finfo(dtype).eps * 8 * config.bound
    for value in (y, x_back):
        torch.testing.assert_close(value, x, rtol=0, atol=eps)
    for value in (log_derivative, log_inverse):
        torch.testing.assert_close(value, torch.zeros_like(x), rtol=0, atol=eps)


@given(config=configs, seed=fst.seeds())
def test_monotonic_continuous_tails(config, seed) -> None:
    params = random_params(1, config, 1.0, seed).expand(2001, -1)
    x = torch.linspace(-1.5 * config.bound, 1.5 * config.bound, 2001, dtype=torch.float64)
    y, log_derivative = rq_spline(x, params, config)
    assert bool((y.diff() > 0).all()), "the spline must be strictly increasing"
    outside = x.abs() > config.bound
    assert torch.equal(y[outside], x[outside])
    assert torch.equal(log_derivative[outside], torch.zeros_like(x[outside]))
    # Slope 1 at both ends: the value and the derivative are continuous at +-bound.
    edges = torch.tensor([-config.bound, config.bound], dtype=torch.float64)
    y_edges, log_edges = rq_spline(edges, params[:2], config)
    torch.testing.assert_close(y_edges, edges, rtol=0, atol=1e-12)
    torch.testing.assert_close(log_edges, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-12)


@settings(max_examples=20)
@given(
    batch=st.integers(1, 4),
    features=st.integers(2, 7),
    bins=st.integers(2, 9),
    seed=fst.seeds(),
    dtype=fst.dtypes(),
)
def test_coupling_on_vectors_with_nflows_defaults(batch, features, bins, seed, dtype) -> None:
    torch.manual_seed(seed)
    layer = RQSplineCoupling(features, lambda i, o: MLPSubnet(i, o, hidden=8), bins=bins)
    layer = perturb_parameters_(layer, scale=0.3, seed=seed)
    x = 2 * torch.randn(batch, features, dtype=dtype)
    report = check_flow(layer, x)
    if dtype == torch.float64:
        assert report.logdet_error < 1e-10
        assert report.inverse_error < 1e-12


def test_elementwise_spline_on_vectors() -> None:
    spline = perturb_parameters_(RQSpline(5, bins=6), scale=1.0, seed=3)
    report = check_flow(spline, 2 * torch.randn(4, 5, dtype=torch.float64))
    assert report.logdet_error < 1e-10


class CountingMLP(MLPSubnet):
    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        CountingMLP.calls += 1
        return super().forward(x)


def test_memory_saving_gradients_exact_with_one_subnet_call_in_backward() -> None:
    blocks = []
    for _ in range(4):
        blocks += [RQSplineCoupling(5, lambda i, o: CountingMLP(i, o, hidden=8), bins=5),
                   flowkit.layers.Permute(5, seed=len(blocks))]
    plain = perturb_parameters_(flowkit.Sequential(*blocks), scale=0.3, seed=0).double()

    def reset() -> None:
        CountingMLP.calls = 0

    assert_saving_matches_plain(plain, 2 * torch.randn(16, 5, dtype=torch.float64),
                                before_backward=reset)
    assert CountingMLP.calls == 4, "the fused rebuild evaluates each subnet once"


def test_bad_configurations_are_named() -> None:
    with pytest.raises(ValueError, match="bins >= 1"):
        SplineConfig(bins=0)
    with pytest.raises(ValueError, match="bound > 0"):
        SplineConfig(bound=0.0)
    with pytest.raises(ValueError, match="min_bin_width.*must lie in"):
        SplineConfig(bins=10, min_bin_width=0.1)
    with pytest.raises(ValueError, match="min_derivative"):
        SplineConfig(min_derivative=1.0)
    with pytest.raises(ValueError, match="takes 23 parameters"):
        rq_spline(torch.zeros(3), torch.zeros(3, 22), SplineConfig(bins=8))


def test_wrong_subnet_output_is_named() -> None:
    layer = RQSplineCoupling(4, lambda i, o: nn.Linear(i, o + 1), bins=3)
    with pytest.raises(ValueError, match="subnet maps"):
        layer(torch.randn(2, 4))


def test_conditional_coupling_memory_saving_routes_the_context_gradient() -> None:
    def stack() -> flowkit.Sequential:
        blocks = []
        for k in range(3):
            blocks += [RQSplineCoupling(4, lambda i, o: MLPSubnet(i, o, hidden=8), bins=4,
                                        context_channels=2), flowkit.layers.Permute(4, seed=k)]
        return flowkit.Sequential(*blocks)

    plain = perturb_parameters_(stack(), scale=0.3, seed=1).double()
    x = torch.randn(6, 4, dtype=torch.float64)
    context = torch.randn(6, 2, dtype=torch.float64)
    y, _ = plain(x, context=context)
    torch.testing.assert_close(plain.inverse(y.detach(), context=context), x)
    x_grad, context_grad, *_ = assert_saving_matches_plain(plain, x, context)
    assert context_grad.abs().max() > 0


class Constant(nn.Module):
    """A subnet that outputs a fixed tensor of parameters, whatever its input."""

    def __init__(self, h: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("h", h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h.expand(x.shape[0], -1)


def test_subnet_output_is_parameter_major() -> None:
    # Documented layout: the raw widths of every active channel, then the heights, then the
    # derivatives. Output 1 is then active channel 1's first width (channel-major: ch. 0's).
    bins, active = 4, 3
    h = torch.zeros(1, (3 * bins - 1) * active, dtype=torch.float64)
    h[0, 1] = 3.0
    layer = RQSplineCoupling(2 * active, lambda i, o: Constant(h), bins=bins).double()
    x = torch.linspace(-2, 2, 7, dtype=torch.float64).repeat(2 * active, 1).T.contiguous()
    y, _ = layer(x)
    changed = (y - x).abs().amax(0)[active:]
    assert changed[1] > 0.01 and changed[0] < 1e-12 and changed[2] < 1e-12
