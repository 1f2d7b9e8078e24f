"""Tests of flowkit.kernels.conv: Triton kernels vs the float64 reference, custom op, dispatch."""

import math
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.kernels import dispatch, use_kernels
from flowkit.kernels.conv import (
    Activation,
    ConvBackend,
    conv_backend,
    large_kernel_conv2d,
    large_kernel_conv2d_reference,
)
from flowkit.kernels.conv_triton import (
    FWD_CONFIGS,
    MAX_BLOCK_N,
    WGRAD_CONFIGS,
    large_kernel_conv2d_backward_triton,
    large_kernel_conv2d_triton,
)
from flowkit.kernels.dispatch import ENV_VAR

# Per-dtype error of one unit-variance term; tolerances grow with sqrt(reduction length) because
# every compared element is a sum of that many unit-variance products (inputs and weights ~ N(0,1)).
ERROR_PER_TERM = {torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


def tolerance(dtype: torch.dtype, reduction: int) -> dict[str, float]:
    """``assert_close`` tolerances for a result reduced over ``reduction`` terms in ``dtype``."""
    eps = ERROR_PER_TERM[dtype]
    return {"atol": eps * math.sqrt(reduction), "rtol": eps}


@dataclass(frozen=True)
class Case:
    dtype: torch.dtype
    batch: int
    c_in: int
    c_out: int
    height: int
    width: int
    kernel: tuple[int, int]
    bias: bool
    activation: Activation

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        x = torch.randn(self.batch, self.c_in, self.height, self.width).to(self.dtype)
        w = torch.randn(self.c_out, self.c_in, *self.kernel).to(self.dtype)
        b = torch.randn(self.c_out).to(self.dtype) if self.bias else None
        return x, w, b


F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
NONE, RELU, LEAKY = Activation.NONE, Activation.RELU, Activation.LEAKY_RELU
# The largest tiles: BLOCK_M pixels (forward and weight gradient) and BLOCK_N channels.
MAX_M = max(t.block_m for t in (*FWD_CONFIGS.values(), *WGRAD_CONFIGS.values()))
CASES = [
    # larger than one tile along every grid axis (rows, W tiles, C_out tiles, wgrad splits)
    Case(F32, 2, 6, MAX_BLOCK_N["ieee"] + 3, 3, MAX_M + 5, (3, 5), True, LEAKY),
    Case(BF16, 2, 8, MAX_BLOCK_N["half"] // 2 + 1, 2, MAX_M + 9, (3, 3), True, NONE),
    Case(F32, 2, 4, 8, 8, 8, (3, 3), True, RELU),
    Case(F32, 1, 16, 16, 16, 16, (7, 7), False, LEAKY),
    Case(F32, 2, 5, 12, 9, 13, (7, 7), True, NONE),
    Case(F32, 1, 4, 6, 12, 10, (11, 11), True, LEAKY),
    Case(F32, 1, 6, 4, 8, 11, (3, 5), False, NONE),
    Case(BF16, 2, 8, 16, 12, 12, (7, 7), True, NONE),
    Case(F16, 1, 16, 4, 16, 8, (3, 3), True, NONE),
    Case(BF16, 1, 4, 8, 8, 8, (7, 7), True, LEAKY),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 compares at full precision (matters on a GPU only; the interpreter has no TF32)."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = previous


def check_against_reference(case: Case) -> None:
    """Forward and (where the activation mask cannot flip under rounding) every gradient."""
    x, w, b = case.tensors()
    y = large_kernel_conv2d_triton(x, w, b, case.activation, 0.1)
    leaves = [t.double().requires_grad_() for t in (x, w) + ((b,) if b is not None else ())]
    ref = large_kernel_conv2d_reference(*leaves[:2], leaves[2] if b is not None else None,
                                        case.activation, 0.1)
    kh, kw = case.kernel
    assert y.dtype == case.dtype and y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last)
    fwd_tol = tolerance(case.dtype, case.c_in * kh * kw)
    torch.testing.assert_close(y.double(), ref.detach(), **fwd_tol)
    # In half precision a pre-activation within rounding of 0 may change sides; the mask is
    # plain torch code, so half-precision gradients are compared without activations.
    if case.dtype != torch.float32 and case.activation is not Activation.NONE:
        return
    grad_out = torch.randn(ref.shape).to(case.dtype)
    ref.backward(grad_out.double())
    grads = large_kernel_conv2d_backward_triton(grad_out, x, w, y, case.activation, 0.1)
    pixels = case.batch * case.height * case.width
    reductions = (case.c_out * kh * kw, pixels, pixels)
    for got, leaf, reduction in zip(grads, leaves, reductions, strict=False):
        assert got.dtype == case.dtype and got.shape == leaf.shape
        torch.testing.assert_close(got.double(), leaf.grad, **tolerance(case.dtype, reduction))


@pytest.mark.interpreter
@pytest.mark.parametrize("case", CASES, ids=str)
def test_triton_matches_float64_reference(case: Case) -> None:
    check_against_reference(case)


@pytest.mark.interpreter
@settings(max_examples=4)
@given(
    batch=st.integers(1, 2),
    c_in=st.integers(4, 12),
    c_out=st.integers(4, 12),
    height=st.integers(8, 14),
    width=st.integers(8, 14),
    k=st.sampled_from([3, 5, 7]),
    bias=st.booleans(),
    activation=st.sampled_from(list(Activation)),
)
def test_triton_matches_reference_random_shapes(batch, c_in, c_out, height, width, k, bias,
                                                activation) -> None:
    check_against_reference(Case(F32, batch, c_in, c_out, height, width, (k, k), bias, activation))


@pytest.mark.interpreter
def test_triton_accepts_nchw_and_channels_last_alike() -> None:
    x, w, b = Case(F32, 1, 4, 8, 8, 8, (3, 3), True, NONE).tensors()
    y_nchw = large_kernel_conv2d_triton(x, w, b)
    y_nhwc = large_kernel_conv2d_triton(x.contiguous(memory_format=torch.channels_last), w, b)
    torch.testing.assert_close(y_nchw, y_nhwc, rtol=0, atol=0)


@pytest.mark.interpreter
def test_triton_wrong_weights_are_caught() -> None:
    """The comparison can fail: a transposed kernel gives a different result."""
    x, w, _ = Case(F32, 1, 4, 4, 8, 8, (3, 3), False, NONE).tensors()
    y = large_kernel_conv2d_triton(x, w.transpose(2, 3))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(y, large_kernel_conv2d_reference(x, w))


@pytest.mark.interpreter
def test_custom_op_opcheck() -> None:
    x, w, b = (t.requires_grad_() for t in Case(F32, 1, 4, 6, 8, 8, (3, 3), True, NONE).tensors())
    op = torch.ops.flowkit.large_kernel_conv2d.default
    torch.library.opcheck(op, (x, w, b, "leaky_relu", 0.1))
    dz = torch.randn(1, 6, 8, 8)  # the gradient op itself is not differentiable
    weight_grad = torch.ops.flowkit.large_kernel_conv2d_weight_grad.default
    torch.library.opcheck(weight_grad, (dz, x.detach(), 3, 3))


@pytest.fixture
def on_fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let the dispatch treat CPU tensors as on a CUDA device (the switches still apply)."""
    monkeypatch.setattr(dispatch, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(dispatch, "device_capability", lambda t: "9.0")
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.mark.interpreter
@pytest.mark.usefixtures("on_fake_cuda")
def test_forced_dispatch_runs_triton_with_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, "1")
    x, w, b = (t.requires_grad_() for t in Case(F32, 2, 4, 6, 8, 8, (3, 3), True, LEAKY).tensors())
    y = large_kernel_conv2d(x, w, b, "leaky_relu", 0.2)
    assert y.is_contiguous(memory_format=torch.channels_last)  # the Triton layout
    grad_out = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, w, b), grad_out)
    leaves = [t.detach().double().requires_grad_() for t in (x, w, b)]
    ref = large_kernel_conv2d_reference(*leaves, "leaky_relu", 0.2)
    expected = torch.autograd.grad(ref, leaves, grad_out.double())
    torch.testing.assert_close(y.double(), ref, **tolerance(F32, 36))
    for g, e, n in zip(got, expected, (6 * 9, 128, 128), strict=True):
        torch.testing.assert_close(g.double(), e, **tolerance(F32, n))
    with use_kernels(None):  # no table row: the reference, NCHW
        y = large_kernel_conv2d(x, w, b, "leaky_relu", 0.2)
    assert y.is_contiguous() and not y.is_contiguous(memory_format=torch.channels_last)


def test_cpu_uses_reference() -> None:
    x, w, b = Case(F32, 1, 4, 6, 8, 8, (7, 7), True, RELU).tensors()
    assert conv_backend(x, w, b) is ConvBackend.REFERENCE
    y = large_kernel_conv2d(x, w, b, "relu")
    torch.testing.assert_close(y, large_kernel_conv2d_reference(x, w, b, "relu"), rtol=0, atol=0)


def test_reference_gradcheck_float64() -> None:
    x, w, b = (t.double().requires_grad_()
               for t in Case(F32, 1, 4, 4, 6, 6, (3, 3), True, NONE).tensors())
    assert torch.autograd.gradcheck(
        lambda *t: large_kernel_conv2d_reference(*t, "leaky_relu", 0.1), (x, w, b), fast_mode=True
    )


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "b_shape", "kwargs", "error", "match"),
    [
        ((4, 8, 8), (6, 4, 3, 3), None, {}, ValueError, "add a batch dimension"),
        ((1, 5, 8, 8), (6, 4, 3, 3), None, {}, ValueError, "5 channels but weight expects 4"),
        ((1, 4, 8, 8), (6, 4, 3, 3), (5,), {}, ValueError, r"bias must have shape \(6,\)"),
        ((1, 4, 8, 8), (6, 4, 3, 3), None, {"activation": "gelu"}, ValueError, "'leaky_relu'"),
    ],
)
def test_invalid_arguments(x_shape, w_shape, b_shape, kwargs, error, match) -> None:
    bias = torch.zeros(b_shape) if b_shape else None
    with pytest.raises(error, match=match):
        large_kernel_conv2d(torch.zeros(x_shape), torch.zeros(w_shape), bias, **kwargs)


def test_invalid_types_and_dtypes() -> None:
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        large_kernel_conv2d([1.0], torch.zeros(6, 4, 3, 3))
    with pytest.raises(ValueError, match=r"convert it with \.to\(x\)"):
        large_kernel_conv2d(torch.zeros(1, 4, 8, 8), torch.zeros(6, 4, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="falls back"):
        large_kernel_conv2d_triton(torch.zeros(1, 3, 8, 8), torch.zeros(6, 3, 3, 3))
