"""Hypothesis strategies for property tests of flows: shapes, dtypes, seeds and states.

Needs ``hypothesis`` (``pip install flowkit[test]``).

Example:
    >>> from hypothesis import given
    >>> from flowkit.testing import strategies as fst
    >>> @given(fst.states(fst.image_shapes(channels=4)))
    ... def test_my_layer(x):
    ...     assert x.shape[1] == 4
    >>> test_my_layer()
"""

from __future__ import annotations

try:
    from hypothesis import strategies as st
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError(
        "flowkit.testing.strategies needs hypothesis: pip install 'flowkit[test]'"
    ) from error

import torch

__all__ = ["dtypes", "image_shapes", "multiscale_shapes", "seeds", "states"]

_SMALL_CHANNELS = st.integers(2, 6)


def dtypes() -> st.SearchStrategy[torch.dtype]:
    """float32 and float64, the dtypes every layer must invert exactly in."""
    return st.sampled_from([torch.float32, torch.float64])


def seeds() -> st.SearchStrategy[int]:
    """Seeds for torch generators."""
    return st.integers(min_value=0, max_value=2**31 - 1)


def image_shapes(
    channels: int | st.SearchStrategy[int] = _SMALL_CHANNELS,
    min_batch: int = 1,
    max_batch: int = 3,
    min_size: int = 2,
    max_size: int = 6,
    multiple_of: int = 1,
) -> st.SearchStrategy[tuple[int, int, int, int]]:
    """``(batch, channels, height, width)`` with sizes that are multiples of ``multiple_of``."""
    channel_st = st.just(channels) if isinstance(channels, int) else channels
    side = st.integers(
        max(1, -(-min_size // multiple_of)), max(1, max_size // multiple_of)
    ).map(lambda k: k * multiple_of)
    return st.tuples(st.integers(min_batch, max_batch), channel_st, side, side)


def multiscale_shapes(
    scales: int,
    channels: int | st.SearchStrategy[int] = _SMALL_CHANNELS,
    min_batch: int = 1,
    max_batch: int = 2,
    coarsest: int = 2,
) -> st.SearchStrategy[tuple[tuple[int, int, int, int], ...]]:
    """Shapes of a tuple state whose spatial size halves from scale to scale (finest first)."""
    channel_st = st.just(channels) if isinstance(channels, int) else channels

    def build(args: tuple[int, int, int]) -> tuple[tuple[int, int, int, int], ...]:
        batch, c, base = args
        return tuple(
            (batch, c, base * 2 ** (scales - 1 - k), base * 2 ** (scales - 1 - k))
            for k in range(scales)
        )

    return st.tuples(
        st.integers(min_batch, max_batch), channel_st, st.integers(1, coarsest)
    ).map(build)


def states(shapes: st.SearchStrategy, dtype: torch.dtype | None = None) -> st.SearchStrategy:
    """Standard-normal states (a tensor, or a tuple for a tuple of shapes) drawn from a seed."""

    def build(args: tuple) -> torch.Tensor | tuple[torch.Tensor, ...]:
        shape, seed, chosen = args
        generator = torch.Generator().manual_seed(seed)
        if isinstance(shape[0], int):
            return torch.randn(shape, generator=generator, dtype=chosen)
        return tuple(torch.randn(s, generator=generator, dtype=chosen) for s in shape)

    dtype_st = st.just(dtype) if dtype is not None else dtypes()
    return st.tuples(shapes, seeds(), dtype_st).map(build)
