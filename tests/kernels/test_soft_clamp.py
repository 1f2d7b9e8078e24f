"""Tests of flowkit.kernels.soft_clamp: the one definition of the coupling soft clamp."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowkit.kernels.soft_clamp import SOFT_CLAMP_SCALE, ClampFn, check_clamp, soft_clamp

FNS = list(ClampFn)


def test_scale_is_two_over_pi() -> None:
    assert SOFT_CLAMP_SCALE == 2 / math.pi


@pytest.mark.parametrize("clamp", [0.5, 2.0, 3.0])
def test_matches_formulas(clamp: float) -> None:
    s = torch.linspace(-20, 20, 101, dtype=torch.float64)
    expected_atan = torch.tensor([clamp * 2 / math.pi * math.atan(v / clamp) for v in s.tolist()])
    expected_tanh = torch.tensor([clamp * math.tanh(v / clamp) for v in s.tolist()])
    torch.testing.assert_close(soft_clamp(s, clamp, ClampFn.ATAN), expected_atan.double())
    torch.testing.assert_close(soft_clamp(s, clamp, "tanh"), expected_tanh.double())


@pytest.mark.parametrize(("fn", "slope"), [(ClampFn.ATAN, 2 / math.pi), (ClampFn.TANH, 1.0)])
def test_slope_at_origin(fn: ClampFn, slope: float) -> None:
    s = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    soft_clamp(s, 2.0, fn).sum().backward()
    torch.testing.assert_close(s.grad, torch.full_like(s, slope))


@pytest.mark.parametrize("fn", FNS)
@given(
    values=st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=16),
    clamp=st.floats(0.1, 10.0),
)
def test_odd_monotone_and_bounded(fn: ClampFn, values: list[float], clamp: float) -> None:
    s = torch.tensor(sorted(values), dtype=torch.float64)
    out = soft_clamp(s, clamp, fn)
    assert torch.all(out.abs() <= clamp)
    assert torch.all(out.diff() >= 0)
    torch.testing.assert_close(soft_clamp(-s, clamp, fn), -out)


@pytest.mark.parametrize("fn", FNS)
def test_dtype_and_shape_preserved(fn: ClampFn) -> None:
    s = torch.randn(2, 3, 4, dtype=torch.bfloat16)
    out = soft_clamp(s, 2.0, fn)
    assert out.dtype == torch.bfloat16 and out.shape == s.shape


@pytest.mark.parametrize("fn", FNS)
def test_gradcheck_float64(fn: ClampFn) -> None:
    s = (torch.randn(4, 5, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: soft_clamp(t, 1.5, fn), (s,))


@pytest.mark.parametrize(
    ("clamp", "fn", "error", "match"),
    [
        (0.0, "atan", ValueError, "positive"),
        (-1.0, "atan", ValueError, "positive"),
        (float("nan"), "atan", ValueError, "positive"),
        (float("inf"), "tanh", ValueError, "positive"),
        (True, "atan", TypeError, "bool"),
        ("2", "atan", TypeError, "str"),
        (2.0, "sigmoid", ValueError, "'atan', 'tanh'"),
    ],
)
def test_invalid_arguments(clamp: object, fn: str, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        soft_clamp(torch.zeros(2), clamp, fn)
    with pytest.raises(error, match=match):
        check_clamp(clamp, fn)


def test_enum_values_are_strings() -> None:
    assert [f.value for f in ClampFn] == ["atan", "tanh"]
    assert ClampFn("atan") is ClampFn.ATAN and ClampFn.TANH == "tanh"
