"""The pyramid references: OpenCV and PyramidFlow semantics, gradients, size rules, dispatch."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.kernels import pyr_down as pyr_down_module
from flowkit.kernels import use_kernels
from flowkit.kernels.pyr_reference import (
    maxpool_down_reference,
    pyr_down_backward_reference,
    pyr_level_backward_reference,
    pyr_up_backward_reference,
)
from flowkit.kernels.pyramid import (
    BINOMIAL_NORM,
    BINOMIAL_TAPS,
    PyramidMode,
    check_pyramid_size,
    pyr_down,
    pyr_down_reference,
    pyr_down_size,
    pyr_level,
    pyr_level_inverse,
    pyr_level_inverse_reference,
    pyr_level_reference,
    pyr_up,
    pyr_up_reference,
    valid_sizes_near,
)

GAUSSIAN, PYRAMIDFLOW = PyramidMode.GAUSSIAN, PyramidMode.PYRAMIDFLOW

# OpenCV 5.0.0 (opencv-python-headless), cv2.pyrDown / cv2.pyrUp on float64 arrays, run once in a
# scratch script: the integer inputs below make every output an exact dyadic number.
CV_DOWN_INPUT = [[0, 7, 3, 10, 6, 2, 9], [5, 1, 8, 4, 0, 7, 3], [10, 6, 2, 9, 5, 1, 8],
                 [4, 0, 7, 3, 10, 6, 2], [9, 5, 1, 8, 4, 0, 7]]
CV_DOWN_TIMES_256 = [[1028, 1310, 1176, 1216], [1198, 1249, 1280, 1144],
                     [1104, 1144, 1384, 1072]]
CV_UP_INPUT = [[0, 5, 3, 1], [6, 4, 2, 0], [5, 3, 1, 6]]
CV_UP_6X8_TIMES_64 = [
    [148, 200, 262, 240, 176, 112, 64, 48], [216, 240, 260, 224, 160, 96, 48, 32],
    [310, 292, 249, 192, 135, 92, 65, 56], [320, 288, 224, 160, 124, 144, 180, 192],
    [296, 264, 200, 136, 121, 204, 303, 336], [288, 256, 192, 128, 120, 224, 344, 384],
]


def _as_map(rows, scale=1.0):
    return torch.tensor(rows, dtype=torch.float64)[None, None] / scale


def _official_blur(x):
    """PyramidFlow's official blur: ``F.pad`` with zeros, then the depthwise 5x5 binomial."""
    taps = torch.tensor(BINOMIAL_TAPS, dtype=x.dtype)
    kernel = (torch.outer(taps, taps) / BINOMIAL_NORM**2).expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2)), kernel, groups=x.shape[1])


def _official_down(x):
    """PyramidFlow's official ``_pyramid_down``: blur, then ``F.max_pool2d(2, 2)``."""
    return F.max_pool2d(_official_blur(x), 2, 2)


def _official_up(x, size):
    """PyramidFlow's official ``_pyramid_up``: ``F.interpolate`` nearest to ``size``, blur."""
    return _official_blur(F.interpolate(x, size=size, mode="nearest"))


@st.composite
def maps(draw, mode, dtype=torch.float64, max_size=12):
    """A random ``[N, C, H, W]`` map that ``mode`` can split."""
    if mode is PYRAMIDFLOW:
        h, w = (2 * draw(st.integers(1, max_size // 2)) for _ in range(2))
    else:
        h, w = (draw(st.integers(2, max_size)) for _ in range(2))
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)), h, w)
    return torch.randn(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))),
                       dtype=dtype)


# ----------------------------------------------------------------------------- semantics


def test_gaussian_down_matches_opencv():
    down = pyr_down_reference(_as_map(CV_DOWN_INPUT), GAUSSIAN)
    torch.testing.assert_close(down, _as_map(CV_DOWN_TIMES_256, 256), rtol=0, atol=0)


@pytest.mark.parametrize("size", [(6, 8), (5, 7), (6, 7), (5, 8)])
def test_gaussian_up_matches_opencv(size):
    """Odd targets crop OpenCV's 2h x 2w result (reflect-101 acts on the 2h x 2w grid)."""
    up = pyr_up_reference(_as_map(CV_UP_INPUT), size, GAUSSIAN)
    expected = _as_map(CV_UP_6X8_TIMES_64, 64)[..., : size[0], : size[1]]
    torch.testing.assert_close(up, expected, rtol=0, atol=0)


@given(data=st.data())
@settings(max_examples=10)
def test_pyramidflow_matches_official_code(data):
    x = data.draw(maps(PYRAMIDFLOW))
    down = pyr_down_reference(x, PYRAMIDFLOW)
    torch.testing.assert_close(down, _official_down(x))
    up = pyr_up_reference(down, x.shape[-2:], PYRAMIDFLOW)
    torch.testing.assert_close(up, _official_up(down, x.shape[-2:]))


def test_max_pool_ties_pick_the_first_in_row_major_order():
    """Inside a constant map all four blurred pixels of a window are equal (exactly: dyadic
    weights): the argmax is 0 and the gradient goes to the window's top-left pixel only."""
    x = torch.ones(1, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    _, argmax = maxpool_down_reference(x)
    assert (argmax[..., 1:-1, 1:-1] == 0).all()
    assert argmax[0, 0, 0, 0] == 3  # zero padding: the pixel furthest from the corner wins
    grad_out = torch.zeros(1, 1, 6, 6, dtype=torch.float64)
    grad_out[0, 0, 2, 3] = 1.0
    (grad,) = torch.autograd.grad(pyr_down_reference(x, PYRAMIDFLOW), x, grad_out)
    taps = torch.tensor(BINOMIAL_TAPS, dtype=torch.float64) / BINOMIAL_NORM
    expected = torch.zeros(12, 12, dtype=torch.float64)
    expected[2:7, 4:9] = torch.outer(taps, taps)  # the blur footprint of pixel (4, 6)
    torch.testing.assert_close(grad[0, 0], expected)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("mode", "shape"), [
    (GAUSSIAN, (1, 2, 6, 8)), (GAUSSIAN, (2, 1, 4, 2)), (GAUSSIAN, (1, 1, 7, 5)),
    (GAUSSIAN, (1, 2, 2, 3)), (PYRAMIDFLOW, (1, 2, 6, 8)), (PYRAMIDFLOW, (2, 1, 4, 2)),
])
def test_references_gradcheck(mode, shape):
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    down = pyr_down_reference(x, mode).detach().requires_grad_()
    residual = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda t: pyr_down_reference(t, mode), (x,))
    torch.autograd.gradcheck(lambda t: pyr_up_reference(t, shape[2:], mode), (down,))
    torch.autograd.gradcheck(lambda t: pyr_level_reference(t, mode), (x,))
    torch.autograd.gradcheck(lambda r, d: pyr_level_inverse_reference(r, d, mode),
                             (residual, down))


@pytest.mark.parametrize("mode", list(PyramidMode))
@given(data=st.data())
@settings(max_examples=8)
def test_backward_references_are_the_adjoints(mode, data):
    """The explicit adjoints (the custom ops' CPU fallback) equal autograd of the references."""
    x = data.draw(maps(mode)).requires_grad_()
    size = tuple(x.shape[-2:])
    residual, down = pyr_level_reference(x, mode)
    grad_residual, grad_down = torch.randn_like(residual), torch.randn_like(down)
    argmax = maxpool_down_reference(x)[1] if mode is PYRAMIDFLOW else None

    (expected,) = torch.autograd.grad(pyr_down_reference(x, mode), x, grad_down)
    torch.testing.assert_close(pyr_down_backward_reference(grad_down, argmax, size, mode),
                               expected)
    coarse = down.detach().requires_grad_()
    (expected,) = torch.autograd.grad(pyr_up_reference(coarse, size, mode), coarse, grad_residual)
    torch.testing.assert_close(pyr_up_backward_reference(grad_residual, tuple(down.shape[-2:]),
                                                         mode), expected)
    (expected,) = torch.autograd.grad((residual, down), x, (grad_residual, grad_down))
    torch.testing.assert_close(pyr_level_backward_reference(grad_residual, grad_down, argmax,
                                                            mode), expected)


# ----------------------------------------------------------------------------- exactness


@pytest.mark.parametrize("mode", list(PyramidMode))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@given(data=st.data())
@settings(max_examples=10)
def test_level_inverse_is_exact(mode, dtype, data):
    x = data.draw(maps(mode, dtype, max_size=24))
    x_back = pyr_level_inverse(*pyr_level(x, mode), mode)
    relative = (x_back - x).norm() / x.norm()
    assert relative < (1e-14 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("mode", list(PyramidMode))
def test_half_precision_rounds_the_float32_result(mode):
    x = torch.randn(2, 3, 8, 10)
    for dtype in (torch.bfloat16, torch.float16):
        x_half = x.to(dtype)
        torch.testing.assert_close(pyr_down_reference(x_half, mode),
                                   pyr_down_reference(x_half.float(), mode).to(dtype))
        assert pyr_up_reference(x_half, (16, 20), mode).dtype == dtype


@pytest.mark.parametrize("mode", list(PyramidMode))
def test_channels_last_gives_the_same_values(mode):
    x = torch.randn(2, 3, 8, 6)
    x_cl = x.to(memory_format=torch.channels_last)
    for a, b in zip(pyr_level_reference(x_cl, mode), pyr_level_reference(x, mode), strict=True):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- sizes


def test_size_rules():
    assert pyr_down_size(7, 8, GAUSSIAN) == (4, 4)
    assert pyr_down_size(6, 8, PYRAMIDFLOW) == (3, 4)
    assert valid_sizes_near(250, 4, PYRAMIDFLOW) == (248, 256)
    assert valid_sizes_near(5, 4, PYRAMIDFLOW) == (8,)
    assert valid_sizes_near(256, 4, PYRAMIDFLOW) == (256,)
    assert valid_sizes_near(4, 4, GAUSSIAN) == (5,)
    check_pyramid_size(256, 64, 7, PYRAMIDFLOW)
    check_pyramid_size(5, 3, 3, "gaussian")
    check_pyramid_size(1, 1, 1, "pyramidflow")
    with pytest.raises(ValueError, match=r"height 250.*multiple of 8.*248, 256"):
        check_pyramid_size(250, 256, 4, PYRAMIDFLOW)
    with pytest.raises(ValueError, match=r"width 3.*at least 5.*: 5"):
        check_pyramid_size(9, 3, 4, GAUSSIAN)
    with pytest.raises(ValueError, match="levels"):
        check_pyramid_size(8, 8, 0, GAUSSIAN)
    with pytest.raises(ValueError, match="unknown pyramid mode 'laplace'"):
        check_pyramid_size(8, 8, 2, "laplace")


@pytest.mark.parametrize("op", [pyr_down, pyr_down_reference, pyr_level, pyr_level_reference])
def test_unsplittable_sizes_raise(op):
    with pytest.raises(ValueError, match=r"height 7.*nearest valid heights: 6, 8"):
        op(torch.zeros(1, 1, 7, 8), PYRAMIDFLOW)
    with pytest.raises(ValueError, match=r"width 1.*at least 2"):
        op(torch.zeros(1, 1, 4, 1), GAUSSIAN)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        op(torch.zeros(4, 4), GAUSSIAN)
    with pytest.raises(TypeError, match="dtype"):
        op(torch.zeros(1, 1, 4, 4, dtype=torch.int32), GAUSSIAN)


@pytest.mark.parametrize("op", [pyr_up, pyr_up_reference])
def test_unreachable_up_sizes_raise(op):
    x = torch.zeros(1, 1, 3, 4)
    op(x, (5, 8), GAUSSIAN)
    with pytest.raises(ValueError, match=r"height 3 to 7: valid target heights are 5 or 6"):
        op(x, (7, 8), GAUSSIAN)
    with pytest.raises(ValueError, match=r"height 3 to 5: valid target heights are 6"):
        op(x, (5, 8), PYRAMIDFLOW)
    with pytest.raises(ValueError, match="share batch and channels"):
        pyr_level_inverse(torch.zeros(1, 2, 6, 8), x, GAUSSIAN)


# ----------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize("mode", list(PyramidMode))
def test_cpu_and_disabled_kernels_take_the_reference(mode, monkeypatch):
    x = torch.randn(1, 2, 8, 6)
    expected = pyr_down_reference(x, mode)
    torch.testing.assert_close(pyr_down(x, mode), expected, rtol=0, atol=0)
    calls = []
    monkeypatch.setattr(pyr_down_module, "_pyr_down_op", lambda *args: calls.append(args))
    with use_kernels(False):
        torch.testing.assert_close(pyr_down(x, mode), expected, rtol=0, atol=0)
    monkeypatch.setenv("FLOWKIT_KERNELS", "0")
    torch.testing.assert_close(pyr_down(x, mode), expected, rtol=0, atol=0)
    assert calls == []
