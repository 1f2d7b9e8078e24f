"""The Laplacian pyramid layer: an exact left inverse at any valid size, clear errors else."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit
from flowkit.layers import LaplacianPyramid
from flowkit.testing import check_flow
from flowkit.testing import strategies as fst


@settings(max_examples=15)
@given(
    levels=st.integers(1, 4),
    mode=st.sampled_from(["pyramidflow", "gaussian"]),
    batch=st.integers(1, 2),
    channels=st.integers(1, 3),
    extra=st.tuples(st.integers(0, 5), st.integers(0, 5)),
    seed=fst.seeds(),
    dtype=fst.dtypes(),
)
def test_left_inverse_is_exact(levels, mode, batch, channels, extra, seed, dtype) -> None:
    multiple = 2 ** (levels - 1)
    if mode == "pyramidflow":
        height, width = (multiple * (1 + e) for e in extra)
    else:
        height, width = (multiple + e for e in extra)  # OpenCV's pyramid takes odd sizes
    x = torch.randn(batch, channels, height, width, dtype=dtype,
                    generator=torch.Generator().manual_seed(seed))
    layer = LaplacianPyramid(levels, mode)
    report = check_flow(layer, x)
    assert report.checked == ["inverse(forward(x)) == x [train]", "inverse(forward(x)) == x [eval]"]
    levels_out, _ = layer(x)
    assert len(levels_out) == levels and not layer.bijective


def test_a_constant_image_has_no_band_pass_energy_away_from_the_border() -> None:
    levels, _ = LaplacianPyramid(3, "gaussian")(torch.full((1, 1, 32, 32), 2.0))
    assert float(levels[0].abs().max()) < 1e-5  # reflect-101 borders keep constants constant
    torch.testing.assert_close(levels[-1], torch.full_like(levels[-1], 2.0))


def test_sizes_the_pyramid_cannot_split_name_the_nearest_valid_sizes() -> None:
    with pytest.raises(ValueError, match=r"(?s)30.*(24|32)"):
        LaplacianPyramid(4, "pyramidflow")(torch.randn(1, 1, 30, 32))


def test_pyramid_then_couplings_composes_and_inverts() -> None:
    flow = flowkit.Sequential(
        LaplacianPyramid(3, "pyramidflow"),
        flowkit.layers.PyramidCoupling("dual", 0, 3, channels=2, kernel_size=3),
    )
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    flowkit.testing.perturb_parameters_(flow).double()
    y, _ = flow(x)
    torch.testing.assert_close(flow.inverse(y), x)
    assert not flow.bijective
