"""The pyramid Triton kernels (run in Triton's interpreter on CPU) against the references."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.kernels import dispatch, use_kernels
from flowkit.kernels import pyr_level as pyr_level_module
from flowkit.kernels.pyr_kernels import (
    BLOCK_H,
    BLOCK_W,
    pyr_down_backward_triton,
    pyr_down_triton,
    pyr_level_backward_triton,
    pyr_level_inverse_triton,
    pyr_level_triton,
    pyr_up_backward_triton,
    pyr_up_triton,
)
from flowkit.kernels.pyr_reference import maxpool_down_reference
from flowkit.kernels.pyramid import (
    PyramidMode,
    pyr_down,
    pyr_down_reference,
    pyr_level,
    pyr_level_inverse,
    pyr_level_inverse_reference,
    pyr_level_reference,
    pyr_up,
    pyr_up_reference,
)

from .test_pyramid import maps

pytestmark = pytest.mark.interpreter

GAUSSIAN, PYRAMIDFLOW = PyramidMode.GAUSSIAN, PyramidMode.PYRAMIDFLOW
MODES = list(PyramidMode)
# Every output sums at most 36 products of O(1) values with dyadic weights, accumulated in
# float32 (float64 for float64); half-precision outputs may differ from the reference by 1 ulp.
TOLERANCES = {
    torch.float64: {"rtol": 1e-12, "atol": 1e-12},
    torch.float32: {"rtol": 1e-5, "atol": 1e-6},
    torch.float16: {"rtol": 1e-3, "atol": 1e-3},
    torch.bfloat16: {"rtol": 1.6e-2, "atol": 1e-2},
}
FLOAT_DTYPES = st.sampled_from([torch.float32, torch.float64])
EXAMPLES = settings(max_examples=8)


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, **TOLERANCES[expected.dtype])


def _autograd(fn, inputs, grads):
    inputs = [t.detach().requires_grad_() for t in inputs]
    outputs = fn(*inputs)
    return torch.autograd.grad(outputs, inputs, grads)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
@EXAMPLES
def test_down_kernels(mode, data):
    x = data.draw(maps(mode, data.draw(FLOAT_DTYPES), max_size=16))
    down, argmax = pyr_down_triton(x, mode)
    assert_close(down, pyr_down_reference(x, mode))
    if mode is PYRAMIDFLOW:
        torch.testing.assert_close(argmax, maxpool_down_reference(x)[1], rtol=0, atol=0)
    grad = torch.randn_like(down)
    (expected,) = _autograd(lambda t: pyr_down_reference(t, mode), [x], grad)
    assert_close(pyr_down_backward_triton(grad, argmax, tuple(x.shape[-2:]), mode), expected)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
@EXAMPLES
def test_up_kernels(mode, data):
    x = data.draw(maps(GAUSSIAN, data.draw(FLOAT_DTYPES), max_size=8))
    h, w = x.shape[-2:]
    crop = (0,) if mode is PYRAMIDFLOW else (0, 1)
    size = (2 * h - data.draw(st.sampled_from(crop)), 2 * w - data.draw(st.sampled_from(crop)))
    up = pyr_up_triton(x, size, mode)
    assert_close(up, pyr_up_reference(x, size, mode))
    grad = torch.randn_like(up)
    (expected,) = _autograd(lambda t: pyr_up_reference(t, size, mode), [x], grad)
    assert_close(pyr_up_backward_triton(grad, (h, w), mode), expected)


@pytest.mark.parametrize("mode", MODES)
@given(data=st.data())
@EXAMPLES
def test_level_kernels(mode, data):
    x = data.draw(maps(mode, data.draw(FLOAT_DTYPES), max_size=16))
    residual, down, argmax = pyr_level_triton(x, mode)
    expected_residual, expected_down = pyr_level_reference(x, mode)
    assert_close(residual, expected_residual)
    assert_close(down, expected_down)
    grads = (torch.randn_like(residual), torch.randn_like(down))
    (expected,) = _autograd(lambda t: pyr_level_reference(t, mode), [x], grads)
    assert_close(pyr_level_backward_triton(*grads, argmax, mode), expected)
    x_back = pyr_level_inverse_triton(residual, down, mode)
    assert_close(x_back, pyr_level_inverse_reference(residual, down, mode))
    assert_close(x_back, x)  # the level is exactly invertible


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("mode", MODES)
def test_half_precision_kernels(mode, dtype):
    x = torch.randn(1, 2, 10, 12).to(dtype)
    residual, down, argmax = pyr_level_triton(x, mode)
    expected_residual, expected_down = pyr_level_reference(x, mode)
    assert residual.dtype == down.dtype == dtype
    assert_close(residual, expected_residual)
    assert_close(down, expected_down)
    grads = (torch.randn_like(residual), torch.randn_like(down))
    (expected,) = _autograd(lambda t: pyr_level_reference(t, mode), [x], grads)
    assert_close(pyr_level_backward_triton(*grads, argmax, mode), expected)


@pytest.mark.parametrize("mode", MODES)
def test_layouts_and_strided_gradients(mode):
    """Channels-last inputs stay channels-last; expanded (stride-0) and transposed-view
    gradients are read through their strides."""
    x = torch.randn(2, 3, 6, 8, dtype=torch.float64)
    x_cl = x.to(memory_format=torch.channels_last)
    residual, down, argmax = pyr_level_triton(x_cl, mode)
    assert residual.is_contiguous(memory_format=torch.channels_last)
    expected_residual, expected_down = pyr_level_reference(x, mode)
    assert_close(residual, expected_residual)
    assert_close(down, expected_down)
    grad_residual = torch.randn(2, 3, 8, 6, dtype=torch.float64).transpose(-1, -2)
    grad_down = torch.tensor(0.5, dtype=torch.float64).expand_as(down)
    expected = pyr_level_backward_triton(grad_residual.contiguous(), grad_down.contiguous(),
                                         argmax, mode)
    assert_close(pyr_level_backward_triton(grad_residual, grad_down, argmax, mode), expected)


def test_max_pool_ties_match_the_reference():
    """Small integers blur to exact dyadic values, so windows tie often and identically in both
    implementations: the argmax and the gradient must follow the same (row-major first) rule."""
    x = torch.randint(0, 3, (2, 2, 12, 10)).double()
    down, argmax = pyr_down_triton(x, PYRAMIDFLOW)
    expected_down, expected_argmax = maxpool_down_reference(x)
    torch.testing.assert_close(down, expected_down, rtol=0, atol=0)
    torch.testing.assert_close(argmax, expected_argmax, rtol=0, atol=0)
    grad = torch.randn_like(down)
    (expected,) = _autograd(lambda t: pyr_down_reference(t, PYRAMIDFLOW), [x], grad)
    assert_close(pyr_down_backward_triton(grad, argmax, (12, 10), PYRAMIDFLOW), expected)


@pytest.mark.parametrize("mode", MODES)
def test_custom_ops_opcheck(mode):
    ops = torch.ops.flowkit
    x = torch.randn(1, 2, 6, 4, dtype=torch.float64, requires_grad=True)
    x_cl = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    residual, down, argmax = (t.detach() for t in ops.pyr_level(x, mode.value))
    samples = [
        (ops.pyr_down.default, (x, mode.value)),
        (ops.pyr_down.default, (x_cl, mode.value)),
        (ops.pyr_down_backward.default, (down, argmax, 6, 4, mode.value)),
        (ops.pyr_up.default, (down.clone().requires_grad_(), 6, 4, mode.value)),
        (ops.pyr_up_backward.default, (residual, 3, 2, mode.value)),
        (ops.pyr_level.default, (x, mode.value)),
        (ops.pyr_level_backward.default, (residual, down, argmax, mode.value)),
        (ops.pyr_level_inverse.default, (residual.clone().requires_grad_(), down, mode.value)),
    ]
    for op, args in samples:
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("mode", MODES)
def test_public_functions_take_the_custom_ops_when_triton_is_selected(mode, monkeypatch):
    """Forced on (as ``FLOWKIT_KERNELS=1`` on CUDA) the public functions run the custom ops, whose
    autograd runs the Triton backward kernels: values and gradients match the references.
    Without a table row they do not."""
    monkeypatch.setattr(dispatch, "_on_cuda", lambda tensors: True)
    monkeypatch.setattr(dispatch, "device_capability", lambda t: "9.0")
    monkeypatch.setenv("FLOWKIT_KERNELS", "1")
    calls = []
    original = pyr_level_module._pyr_level_op
    monkeypatch.setattr(pyr_level_module, "_pyr_level_op",
                        lambda *args: calls.append(args) or original(*args))
    x = torch.randn(1, 2, 8, 12, dtype=torch.float64)

    def pipeline(fns, t):
        down_fn, up_fn, level_fn, inverse_fn = fns
        residual, down = level_fn(t, mode)
        coarse = down_fn(down, mode)
        return inverse_fn(residual, up_fn(coarse, down.shape[-2:], mode), mode)

    public = (pyr_down, pyr_up, pyr_level, pyr_level_inverse)
    reference = (pyr_down_reference, pyr_up_reference, pyr_level_reference,
                 pyr_level_inverse_reference)
    grad = torch.randn(1, 2, 8, 12, dtype=torch.float64)
    actual = _autograd(lambda t: pipeline(public, t), [x], grad)
    expected = _autograd(lambda t: pipeline(reference, t), [x], grad)
    assert len(calls) == 1
    assert_close(actual[0], expected[0])
    with use_kernels(None):  # the shipped table has no rows
        _autograd(lambda t: pipeline(public, t), [x], grad)
    assert len(calls) == 1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", MODES)
def test_kernels_on_maps_of_several_tiles(mode, dtype):
    """Every output of every kernel spans more than one tile along each grid axis (planes,
    rows, columns): a launch that dropped all but its first program would leave garbage."""
    fine = (2 * BLOCK_H + 3, 2 * BLOCK_W + 5)  # the coarse maps span > 1 tile too
    if mode is PYRAMIDFLOW:
        fine = (fine[0] + 1, fine[1] + 1)
    x = torch.randn(1, 2, *fine, dtype=dtype)
    residual, down, argmax = pyr_level_triton(x, mode)
    assert down.shape[-2] > BLOCK_H and down.shape[-1] > BLOCK_W
    expected_residual, expected_down = pyr_level_reference(x, mode)
    assert_close(residual, expected_residual)
    assert_close(down, expected_down)
    grads = (torch.randn_like(residual), torch.randn_like(down))
    (expected,) = _autograd(lambda t: pyr_level_reference(t, mode), [x], grads)
    assert_close(pyr_level_backward_triton(*grads, argmax, mode), expected)
    assert_close(pyr_level_inverse_triton(residual, down, mode),
                 pyr_level_inverse_reference(residual, down, mode))
    (expected_down_t,) = _autograd(lambda t: pyr_down_reference(t, mode), [x], grads[1])
    assert_close(pyr_down_backward_triton(grads[1], argmax, fine, mode), expected_down_t)
    up = pyr_up_triton(down, fine, mode)
    assert_close(up, pyr_up_reference(down, fine, mode))
    (expected_up_t,) = _autograd(lambda t: pyr_up_reference(t, fine, mode), [down], grads[0])
    assert_close(pyr_up_backward_triton(grads[0], tuple(down.shape[-2:]), mode), expected_up_t)
