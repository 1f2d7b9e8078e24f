"""Laplacian-pyramid modes, the binomial blur taps and the size rules shared by the pyramid ops.

Two pyramids share one 5-tap binomial blur and differ in borders, decimation and interpolation:

* :attr:`PyramidMode.PYRAMIDFLOW` (the pyramid of PyramidFlow's official code): zero padding,
  ``down`` = blur then 2x2 max-pool, ``up`` = nearest x2 then the same blur. Every split halves
  an even size exactly, so an ``L``-level pyramid needs ``H`` and ``W`` divisible by ``2**(L-1)``.
* :attr:`PyramidMode.GAUSSIAN` (Burt-Adelson with OpenCV's ``pyrDown``/``pyrUp``): reflect-101
  borders, ``down`` keeps the even pixels of the blurred map (``ceil(n / 2)`` of ``n``), ``up``
  zero-inserts and blurs with 4x the kernel. Any size ``n >= 2`` splits; odd sizes recompose
  because ``up`` accepts a target of ``2m - 1`` as well as ``2m``.
"""

from __future__ import annotations

import os

import torch

from .choice import Choice
from .dispatch import dtype_precision, triton_available, use_triton
from .dispatch_table import OpFamily, size_class

__all__ = [
    "ARGMAX_DTYPE",
    "BINOMIAL_NORM",
    "BINOMIAL_TAPS",
    "SUPPORTED_DTYPES",
    "ZERO_INSERT_GAIN",
    "PyramidMode",
    "check_pyramid_input",
    "check_pyramid_size",
    "check_up_size",
    "empty_argmax",
    "empty_map",
    "like_map",
    "pyr_down_size",
    "pyramid_shape_class",
    "runs_triton",
    "use_pyramid_kernel",
    "valid_sizes_near",
]

BINOMIAL_TAPS = (1, 4, 6, 4, 1)
"""The 1-D binomial taps; the 2-D blur is their outer product divided by ``BINOMIAL_NORM**2``."""
BINOMIAL_NORM = sum(BINOMIAL_TAPS)
"""Sum of :data:`BINOMIAL_TAPS` (16): the 1-D blur is ``BINOMIAL_TAPS / BINOMIAL_NORM``."""

ZERO_INSERT_GAIN = 2
"""Per-axis gain of the gaussian ``up``: zero insertion keeps every other pixel of each axis."""
ARGMAX_DTYPE = torch.uint8
"""dtype of the 2x2 max-pool argmax: ``0..3`` = ``2 * row + column`` in the window."""
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

if BINOMIAL_TAPS != BINOMIAL_TAPS[::-1] or len(BINOMIAL_TAPS) != 5:
    # The kernels use the symmetry (blur adjoint = blur) and the 5-tap polyphase windows.
    raise RuntimeError("the pyramid kernels assume 5 symmetric binomial taps")


class PyramidMode(Choice):
    """Which Laplacian pyramid an op computes (see the module docstring for the exact maths)."""

    PYRAMIDFLOW = "pyramidflow"
    GAUSSIAN = "gaussian"


def check_pyramid_input(x: torch.Tensor, name: str = "x") -> None:
    """Raise ``ValueError``/``TypeError`` unless ``x`` is a ``[N, C, H, W]`` float tensor."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a [N, C, H, W] tensor, got shape {tuple(x.shape)}")
    if x.dtype not in SUPPORTED_DTYPES:
        names = ", ".join(str(d) for d in SUPPORTED_DTYPES)
        raise TypeError(f"{name} must have one of the dtypes {names}, got {x.dtype}")


def empty_map(
    like: torch.Tensor, height: int, width: int, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """An uninitialised ``[N, C, height, width]`` map with ``like``'s batch, channels, device and
    memory format (channels-last stays channels-last), in ``dtype`` (default ``like.dtype``)."""
    channels_last = like.dim() == 4 and not like.is_contiguous() and like.is_contiguous(
        memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty((*like.shape[:2], height, width), dtype=dtype or like.dtype,
                       device=like.device, memory_format=layout)


def empty_argmax(x: torch.Tensor) -> torch.Tensor:
    """The (empty) placeholder argmax of the gaussian mode, which has no max-pool."""
    return x.new_empty((0,), dtype=ARGMAX_DTYPE)


def like_map(result: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``result`` copied into :func:`empty_map` storage shaped after ``like``, so that the
    reference path of a custom op returns the same strides as its Triton path and fake."""
    return empty_map(like, *result.shape[-2:], dtype=result.dtype).copy_(result)


def _min_gaussian_size(levels: int) -> int:
    """Smallest size that the gaussian mode splits ``levels - 1`` times (every split sees >= 2)."""
    return 1 if levels <= 1 else 2 ** (levels - 2) + 1


def valid_sizes_near(size: int, levels: int, mode: PyramidMode | str) -> tuple[int, ...]:
    """The valid sizes of one dimension of an ``levels``-level pyramid closest to ``size``.

    Args:
        size: a height or width.
        levels: number of pyramid levels (``levels - 1`` splits).
        mode: the pyramid mode.

    Returns:
        ``(size,)`` if ``size`` is valid, else the nearest valid sizes below (if any) and above.

    Example:
        >>> valid_sizes_near(250, 4, "pyramidflow")
        (248, 256)
        >>> valid_sizes_near(3, 4, "gaussian")
        (5,)
    """
    mode = PyramidMode(mode)
    if mode is PyramidMode.GAUSSIAN:
        return (max(size, _min_gaussian_size(levels)),)
    step = 2 ** max(levels - 1, 0)
    if size >= step and size % step == 0:
        return (size,)
    below = (size // step) * step
    return tuple(s for s in (below, below + step) if s > 0)


def check_pyramid_size(height: int, width: int, levels: int, mode: PyramidMode | str) -> None:
    """Raise ``ValueError`` unless an ``H x W`` map splits into a ``levels``-level pyramid.

    ``pyramidflow`` needs ``H`` and ``W`` divisible by ``2**(levels-1)`` (each 2x2 max-pool needs
    an even size, each nearest x2 up-sampling restores it exactly); ``gaussian`` needs every split
    level to be at least 2 pixels, i.e. ``H, W >= 2**(levels-2) + 1``. The message names the
    offending size and the nearest valid sizes.

    Args:
        height: map height ``H``.
        width: map width ``W``.
        levels: number of levels ``L >= 1`` (``L - 1`` splits).
        mode: the pyramid mode.

    Raises:
        ValueError: for an invalid size, level count or mode.

    Example:
        >>> check_pyramid_size(256, 256, 4, "pyramidflow")
        >>> check_pyramid_size(250, 256, 4, "pyramidflow")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: pyramidflow pyramid of 4 levels cannot split height 250: ...: 248, 256
    """
    mode = PyramidMode(mode)
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be an int >= 1, got {levels!r}")
    for name, size in (("height", height), ("width", width)):
        if size < 1:
            raise ValueError(f"{mode.value} pyramid needs a positive {name}, got {size}")
        nearest = valid_sizes_near(size, levels, mode)
        if nearest == (size,):
            continue
        if mode is PyramidMode.PYRAMIDFLOW:
            rule = (f"it must be a multiple of {2 ** (levels - 1)} "
                    "(every 2x2 max-pool needs an even size)")
        else:
            rule = (f"it must be at least {_min_gaussian_size(levels)} "
                    "(every split level needs >= 2 pixels)")
        valid = ", ".join(str(s) for s in nearest)
        raise ValueError(f"{mode.value} pyramid of {levels} levels cannot split {name} {size}: "
                         f"{rule}; nearest valid {name}s: {valid}")


def pyr_down_size(height: int, width: int, mode: PyramidMode | str) -> tuple[int, int]:
    """Size of ``pyr_down`` of an ``H x W`` map, after checking that the mode can split it.

    Args:
        height: ``H``.
        width: ``W``.
        mode: the pyramid mode.

    Returns:
        ``(H // 2, W // 2)`` for pyramidflow (``H``, ``W`` even), ``((H+1)//2, (W+1)//2)`` for
        gaussian (``H``, ``W >= 2``), OpenCV's default ``pyrDown`` size.

    Raises:
        ValueError: for a size the mode cannot split.
    """
    mode = PyramidMode(mode)
    check_pyramid_size(height, width, 2, mode)
    return (height + 1) // 2, (width + 1) // 2


def check_up_size(
    coarse: tuple[int, int], size: tuple[int, int], mode: PyramidMode | str
) -> None:
    """Raise ``ValueError`` unless ``pyr_up`` may take an ``h x w`` map to ``size = (H, W)``.

    pyramidflow needs ``(H, W) == (2h, 2w)``; gaussian takes each of ``H, W`` equal to twice the
    coarse size or one less (OpenCV's rule ``|dst - 2*src| <= dst % 2`` restricted to
    ``dst <= 2*src``), exactly the sizes whose ``pyr_down`` is ``h x w``.

    Args:
        coarse: ``(h, w)``, the size of ``pyr_up``'s input.
        size: ``(H, W)``, the requested output size.
        mode: the pyramid mode.

    Raises:
        ValueError: naming the requested and the valid sizes.
    """
    mode = PyramidMode(mode)
    for name, src, dst in zip(("height", "width"), coarse, size, strict=True):
        valid = (2 * src,) if mode is PyramidMode.PYRAMIDFLOW else (2 * src - 1, 2 * src)
        if dst not in valid:
            options = " or ".join(str(v) for v in valid)
            raise ValueError(f"{mode.value} pyr_up cannot take {name} {src} to {dst}: "
                             f"valid target {name}s are {options}")


def runs_triton(t: torch.Tensor) -> bool:
    """Whether a pyramid custom op on ``t`` runs the Triton kernels (which the public functions
    call only where :func:`use_pyramid_kernel` says so): on CUDA, or on CPU under Triton's
    interpreter (``TRITON_INTERPRET=1``), which is how the tests exercise the kernels and the
    ops' registration without a GPU; elsewhere, or without Triton, the references run."""
    interpreted = os.environ.get("TRITON_INTERPRET", "0") == "1"
    return (t.is_cuda or interpreted) and triton_available()


def pyramid_shape_class(fine_numel: int, mode: PyramidMode, grad: bool) -> str:
    """The dispatch key of a pyramid call: the mode, a bucket of the fine map's element count
    (batch x channels x H x W of the full-resolution side), and the pass.

    Example:
        >>> pyramid_shape_class(2 * 16 * 256 * 256, PyramidMode.PYRAMIDFLOW, False)
        'pyramidflow:n<=2^22:fwd'
    """
    return f"{mode.value}:{size_class(fine_numel)}:{'fwd_bwd' if grad else 'fwd'}"


def use_pyramid_kernel(op: str, mode: PyramidMode, fine_numel: int,
                       *tensors: torch.Tensor) -> bool:
    """Whether the public pyramid function ``op`` takes its Triton custom op for this call.

    Args:
        op: ``pyr_down``, ``pyr_up``, ``pyr_level`` or ``pyr_level_inverse``.
        mode: the pyramid mode.
        fine_numel: the element count of the call's full-resolution map.
        tensors: every tensor input of the call (all must be on CUDA; the first sets the dtype).
    """
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    shape_class = pyramid_shape_class(fine_numel, mode, grad)
    precision = dtype_precision(tensors[0].dtype)
    return use_triton(OpFamily.PYRAMID, op, precision, shape_class, *tensors)
