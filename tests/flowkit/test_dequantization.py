"""Uniform dequantization and bits per dimension, against their definitions."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit import bits_per_dim, uniform_dequantize
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
    with pytest.raises(ValueError, match="levels must be an integer >= 2"):
        bits_per_dim(1.0, 4, levels=1)
    with pytest.raises(ValueError, match="dims must be"):
        bits_per_dim(1.0, 0)
