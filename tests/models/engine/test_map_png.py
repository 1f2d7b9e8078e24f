"""Map PNGs: any map round-trips through the 16-bit file to within half a step of its scale,
and no value is clipped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.models.engine.map_png import MAP_PNG_MAX, map_scale, read_map_png, write_map_png


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), shape=st.tuples(st.integers(1, 40), st.integers(1, 40)),
       spread=st.floats(1e-6, 1e6), shift=st.floats(-1e3, 1e3),
       base=st.tuples(st.floats(-10, 10), st.floats(0, 10)))
def test_round_trip_within_half_a_step(seed: int, shape: tuple[int, int], spread: float,
                                       shift: float, base: tuple[float, float],
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    rng = np.random.default_rng(seed)
    scores = (shift + spread * rng.standard_exponential(shape)).astype(np.float32)
    base_range = (base[0], base[0] + base[1])
    path = tmp_path_factory.mktemp("png") / "map.png"
    low, high = write_map_png(path, scores, base_range)
    assert (low, high) == map_scale(scores, base_range)
    assert low <= min(scores.min(), base_range[0]) and high >= max(scores.max(), base_range[1])
    decoded = read_map_png(path)
    step = (high - low) / MAP_PNG_MAX
    np.testing.assert_allclose(decoded, scores, rtol=0, atol=step / 2 + 1e-9 * abs(high))


def test_a_png_without_a_scale_is_refused(tmp_path: Path) -> None:
    from skimage import io as skio

    skio.imsave(tmp_path / "plain.png", np.zeros((4, 4), np.uint16), check_contrast=False)
    with pytest.raises(ValueError, match="not a map PNG of flowkit predict"):
        read_map_png(tmp_path / "plain.png")
