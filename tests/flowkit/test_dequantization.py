"""Uniform dequantization and bits per dimension, against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit import VariationalDequantization, bits_per_dim, layers, uniform_dequantize
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst


@given(levels=st.integers(2, 300), seed=fst.seeds())
def test_dequantized_values_stay_in_their_cell(levels: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    k = torch.randint(levels, (200,), generator=generator)
    x = uniform_dequantize(k, levels, generator=generator)
    assert x.dtype == torch.float32
    assert bool(((x >= 0) & (x < 1)).all())
    assert torch.equal(torch.floor(x.double() * levels).long(), k)


@given(levels=st.integers(2, 300), dims=st.integers(1, 100), p=st.floats(1e-6, 1.0))
def test_bits_per_dim_of_a_cellwise_constant_density(levels: int, dims: int, p: float) -> None:
    # A density equal to P(k) * levels^D on k's cell gives -log2 P(k) / D bits per dim.
    nll = -(math.log(p) + dims * math.log(levels))
    expected = -math.log2(p) / dims
    assert float(bits_per_dim(torch.tensor(nll, dtype=torch.float64), dims, levels)) == (
        pytest.approx(expected, abs=1e-9)
    )


def test_uniform_density_scores_log2_levels() -> None:
    assert float(bits_per_dim(0.0, dims=3 * 32 * 32, levels=256)) == pytest.approx(8.0)


def test_bad_inputs_are_named() -> None:
    with pytest.raises(ValueError, match="integer pixel values in \\[0, 256\\)"):
        uniform_dequantize(torch.tensor([0.5]))
    with pytest.raises(ValueError, match="integer pixel values"):
        uniform_dequantize(torch.tensor([256]))
    with pytest.raises(ValueError, match="integer pixel values"):
        uniform_dequantize(torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        bits_per_dim(1.0, 4, levels=1)
    with pytest.raises(ValueError, match="dims must be"):
        bits_per_dim(1.0, 0)


def test_variational_dequantization_density_integrates_to_one() -> None:
    torch.manual_seed(0)
    spline = perturb_parameters_(layers.RQSpline(1, bins=5), scale=1.0, seed=2).double()
    dequantize = VariationalDequantization(spline, levels=4)
    k = torch.full((20_000, 1), 2, dtype=torch.float64)
    x, log_q = dequantize(k)
    u = x * 4 - k
    assert bool(((u > 0) & (u < 1)).all())
    # q(u) by the change of variables u -> v = logit(u) -> eps = f^-1(v), on a grid.
    grid = torch.linspace(1e-6, 1 - 1e-6, 200_001, dtype=torch.float64).unsqueeze(1)

    def log_density(points: torch.Tensor) -> torch.Tensor:
        v = torch.logit(points)
        eps, logdet_inverse = spline.inverse_and_logdet(v)
        log_normal = -0.5 * (eps.square() + math.log(2 * math.pi)).sum(1)
        return log_normal + logdet_inverse - torch.log(points * (1 - points)).sum(1)

    with torch.no_grad():
        total = torch.trapezoid(log_density(grid).exp(), grid[:, 0])
        torch.testing.assert_close(log_q, log_density(u), rtol=0, atol=1e-9)
    assert abs(float(total) - 1) < 1e-4


def test_variational_dequantization_conditional_on_the_image() -> None:
    noise_flow = layers.AffineCoupling(2, lambda i, o: layers.ConvSubnet(i, o, 8),
                                       context_channels=2)
    dequantize = VariationalDequantization(perturb_parameters_(noise_flow, seed=3), levels=256)
    k = torch.randint(256, (3, 2, 4, 4))
    x, log_q = dequantize(k)
    assert torch.equal(torch.floor(x * 256).long(), k)
    (x.sum() + log_q.sum()).backward()
    assert all(p.grad is not None for p in noise_flow.parameters())
    with pytest.raises(TypeError, match="needs a flowkit.Flow"):
        VariationalDequantization(torch.nn.Identity())
