"""Tests of flowkit.kernels.coupling: the fused affine coupling vs its float64 reference."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.kernels import coupling, dispatch, use_kernels
from flowkit.kernels.coupling import (
    affine_coupling_forward,
    affine_coupling_forward_reference,
    affine_coupling_inverse,
    affine_coupling_inverse_reference,
)
from flowkit.kernels.coupling_triton import (
    BLOCK,
    affine_coupling_backward_triton,
    affine_coupling_triton,
)
from flowkit.kernels.dispatch import ENV_VAR
from flowkit.kernels.soft_clamp import ClampFn, soft_clamp

# Elementwise results are compared with a per-dtype tolerance; the logdet, a sum over N elements
# accumulated in float32 (float64 for float64), with that tolerance scaled by sqrt(N).
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 2e-6,
    torch.float16: 2e-3,
    torch.bfloat16: 1.6e-2,
}
LAYOUTS = ["contiguous", "channels_last", "3d"]
SHAPE = (2, 4, 16, 20)  # 1280 elements per sample: two kernel blocks, the second ragged


def tol(dtype: torch.dtype, reduction: int = 1) -> dict[str, float]:
    eps = TOLERANCE[dtype]
    return {"atol": eps * math.sqrt(reduction), "rtol": eps}


def make(layout: str, dtype: torch.dtype, shape=SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    """Active half and subnet output; log-scales spread over both atan range-reduction cuts."""
    b, c, *spatial = shape
    x = torch.randn(b, c, *spatial)
    h = torch.randn(b, 2 * c, *spatial) * 3
    if layout == "3d":
        x, h = x.flatten(2), h.flatten(2)
    if layout == "channels_last":
        x, h = (t.contiguous(memory_format=torch.channels_last) for t in (x, h))
    return x.to(dtype), h.to(dtype)


def test_shape_spans_more_than_one_tile_on_both_grid_axes() -> None:
    """A grid that drops all but its first program must fail the kernel tests."""
    assert SHAPE[1] * SHAPE[2] * SHAPE[3] > BLOCK and SHAPE[0] > 1


def reference(reverse: bool):
    return affine_coupling_inverse_reference if reverse else affine_coupling_forward_reference


def check_against_reference(x, h, clamp, clamp_fn, reverse) -> None:
    """Output, logdet and both gradients of the Triton kernels vs float64 autograd."""
    dtype, n = x.dtype, x[0].numel()
    v, logdet = affine_coupling_triton(x, h, clamp, clamp_fn, reverse)
    x64, h64 = (t.double().requires_grad_() for t in (x, h))
    v_ref, logdet_ref = reference(reverse)(x64, h64, clamp, clamp_fn)
    assert v.dtype == dtype and v.shape == x.shape and v.stride() == x.stride()
    assert logdet.shape == (x.shape[0],)
    assert logdet.dtype == torch.promote_types(dtype, torch.float32)
    torch.testing.assert_close(v.double(), v_ref.detach(), **tol(dtype))
    torch.testing.assert_close(logdet.double(), logdet_ref.detach(), **tol(dtype, n))

    grad_v = torch.randn(v.shape).to(dtype)
    grad_logdet = torch.randn(x.shape[0], dtype=logdet.dtype)
    torch.autograd.backward((v_ref, logdet_ref), (grad_v.double(), grad_logdet.double()))
    grad_x, grad_h = affine_coupling_backward_triton(
        grad_v, grad_logdet, x, h, clamp, clamp_fn, reverse
    )
    assert grad_x.shape == x.shape and grad_h.shape == h.shape and grad_h.dtype == dtype
    torch.testing.assert_close(grad_x.double(), x64.grad, **tol(dtype))
    torch.testing.assert_close(grad_h.double(), h64.grad, **tol(dtype))


@pytest.mark.interpreter
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
@pytest.mark.parametrize("clamp_fn", list(ClampFn), ids=str)
@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
def test_triton_matches_float64_reference(dtype, clamp_fn, reverse) -> None:
    x, h = make("contiguous", dtype)
    check_against_reference(x, h, 2.0, clamp_fn, reverse)


@pytest.mark.interpreter
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
def test_triton_layouts(layout, reverse) -> None:
    x, h = make(layout, torch.float32)
    check_against_reference(x, h, 1.5, ClampFn.ATAN, reverse)


@pytest.mark.interpreter
def test_triton_mixed_layouts_are_copied() -> None:
    x, _ = make("channels_last", torch.float32)
    _, h = make("contiguous", torch.float32)
    v, _ = affine_coupling_triton(x, h, 2.0, "tanh", False)
    expected, _ = affine_coupling_forward_reference(x, h, 2.0, "tanh")
    torch.testing.assert_close(v, expected, **tol(torch.float32))


@pytest.mark.interpreter
@pytest.mark.parametrize("clamp_fn", list(ClampFn), ids=str)
def test_triton_soft_clamp_over_its_whole_range(clamp_fn) -> None:
    """With x = 1 and t = 0 the output is exp(s): the kernel's atan/tanh against torch's."""
    cuts = torch.tensor([0.66, math.sqrt(2) + 1], dtype=torch.float64) * 2.0
    raw = torch.cat([torch.linspace(-60, 60, 601, dtype=torch.float64), cuts, -cuts,
                     torch.tensor([0.0, 1e-9, 1e4, -1e4, 1e30], dtype=torch.float64)])
    h = torch.cat([raw, torch.zeros_like(raw)]).reshape(1, 2, -1)
    y, logdet = affine_coupling_triton(torch.ones(1, 1, raw.numel(), dtype=torch.float64), h,
                                       2.0, clamp_fn, False)
    s = soft_clamp(raw, 2.0, clamp_fn)
    torch.testing.assert_close(y.flatten(), s.exp(), rtol=1e-14, atol=0)
    torch.testing.assert_close(logdet, s.sum().reshape(1), **tol(torch.float64, raw.numel()))


@pytest.mark.interpreter
@settings(max_examples=5)
@given(
    batch=st.integers(1, 3),
    channels=st.integers(1, 5),
    spatial=st.lists(st.integers(1, 9), min_size=0, max_size=2),
    clamp=st.floats(0.5, 4.0),
    clamp_fn=st.sampled_from(list(ClampFn)),
    reverse=st.booleans(),
)
def test_triton_random_shapes(batch, channels, spatial, clamp, clamp_fn, reverse) -> None:
    x, h = make("contiguous", torch.float64, (batch, channels, *spatial))
    check_against_reference(x, h, clamp, clamp_fn, reverse)


@pytest.mark.interpreter
def test_triton_round_trip() -> None:
    x, h = make("contiguous", torch.float32)
    y, logdet = affine_coupling_triton(x, h, 2.0, "atan", False)
    x_rec, logdet_inv = affine_coupling_triton(y, h, 2.0, "atan", True)
    torch.testing.assert_close(x_rec, x, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logdet_inv, -logdet, rtol=0, atol=0)


@pytest.mark.interpreter
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "inverse"])
def test_custom_op_gradcheck_and_opcheck(reverse) -> None:
    x, h = (t.requires_grad_() for t in make("contiguous", torch.float64, (1, 2, 3, 3)))
    op = torch.ops.flowkit.affine_coupling.default
    assert torch.autograd.gradcheck(lambda a, b: op(a, b, 2.0, "atan", reverse), (x, h))
    torch.library.opcheck(op, (x, h, 2.0, "tanh", reverse))
    grads = (torch.randn(1, 2, 3, 3, dtype=torch.float64), torch.randn(1, dtype=torch.float64))
    backward = torch.ops.flowkit.affine_coupling_backward.default
    torch.library.opcheck(backward, (*grads, x.detach(), h.detach(), 2.0, "atan", reverse))


@pytest.mark.interpreter
def test_custom_op_gradient_of_output_only() -> None:
    """An unused logdet gets a zero gradient, not an error."""
    x, h = (t.requires_grad_() for t in make("contiguous", torch.float32))
    y, _ = torch.ops.flowkit.affine_coupling(x, h, 2.0, "atan", False)
    y.sum().backward()
    s = soft_clamp(h.detach()[:, :4], 2.0, "atan")
    torch.testing.assert_close(x.grad, s.exp(), **tol(torch.float32))


@pytest.fixture
def op_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Pretend CPU tensors are on CUDA and record which passes take the custom op."""
    calls: list[bool] = []
    real = coupling._coupling_op

    def spy(u, h, clamp, clamp_fn, reverse):
        calls.append(reverse)
        return real(u, h, clamp, clamp_fn, reverse)

    monkeypatch.setattr(dispatch, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(dispatch, "device_capability", lambda t: "9.0")
    monkeypatch.setattr(coupling, "_coupling_op", spy)
    monkeypatch.setenv(ENV_VAR, "1")
    return calls


@pytest.mark.interpreter
def test_dispatch_switches(op_calls: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    x, h = make("contiguous", torch.float32, (1, 2, 4, 4))
    y, logdet = affine_coupling_forward(x, h, 2.0)
    x_rec, _ = affine_coupling_inverse(y, h, 2.0)
    assert op_calls == [False, True]
    torch.testing.assert_close(x_rec, x, rtol=1e-5, atol=1e-6)
    with use_kernels(False):
        affine_coupling_forward(x, h, 2.0)
    with use_kernels(None):  # the shipped table has no rows: the reference
        affine_coupling_forward(x, h, 2.0)
    monkeypatch.setenv(ENV_VAR, "0")
    affine_coupling_inverse(y, h, 2.0)
    assert op_calls == [False, True]


def test_cpu_uses_reference() -> None:
    x, h = make("contiguous", torch.float32)
    y, logdet = affine_coupling_forward(x, h, 2.0, "tanh")
    y_ref, logdet_ref = affine_coupling_forward_reference(x, h, 2.0, "tanh")
    torch.testing.assert_close((y, logdet), (y_ref, logdet_ref), rtol=0, atol=0)


def test_reference_gradcheck_float64() -> None:
    x, h = (t.requires_grad_() for t in make("contiguous", torch.float64, (2, 2, 3, 3)))
    for ref in (affine_coupling_forward_reference, affine_coupling_inverse_reference):
        assert torch.autograd.gradcheck(lambda a, b, ref=ref: ref(a, b, 3.0, "atan"), (x, h))


def test_reference_is_exactly_invertible_and_logdets_match_jacobian() -> None:
    x, h = make("contiguous", torch.float64, (1, 2, 2, 2))
    y, logdet = affine_coupling_forward_reference(x, h, 2.0)
    jac = torch.autograd.functional.jacobian(
        lambda a: affine_coupling_forward_reference(a, h, 2.0)[0], x
    ).reshape(x.numel(), x.numel())
    torch.testing.assert_close(logdet, torch.linalg.slogdet(jac).logabsdet.reshape(1))
    x_rec, logdet_inv = affine_coupling_inverse_reference(y, h, 2.0)
    torch.testing.assert_close(x_rec, x)
    torch.testing.assert_close(logdet_inv, -logdet)


@pytest.mark.parametrize(
    ("x", "h", "clamp", "clamp_fn", "error", "match"),
    [
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), 2.0, "atan", ValueError, "2 \\* C channels"),
        (torch.zeros(2, 3, 4), torch.zeros(1, 6, 4), 2.0, "atan", ValueError, "h \\[B, 2C"),
        (torch.zeros(3), torch.zeros(6), 2.0, "atan", ValueError, "x \\[B, C"),
        (torch.zeros(2, 3), torch.zeros(2, 6, dtype=torch.float64), 2.0, "atan", ValueError,
         "convert it"),
        (torch.zeros(2, 3), torch.zeros(2, 6), -1.0, "atan", ValueError, "positive"),
        (torch.zeros(2, 3), torch.zeros(2, 6), 2.0, "relu", ValueError, "'tanh'"),
        ([0.0], torch.zeros(2, 6), 2.0, "atan", TypeError, "x must be a torch.Tensor"),
    ],
)
def test_invalid_arguments(x, h, clamp, clamp_fn, error, match) -> None:
    for fn in (affine_coupling_forward, affine_coupling_inverse):
        with pytest.raises(error, match=match):
            fn(x, h, clamp, clamp_fn)
