"""The subtle synthetic categories (fabric, steel, pcb): exact masks at any size and seed, defects
that are small in intensity or differ only in structure or placement, and determinism."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.models.data import (
    GOOD,
    SYNTHETIC_DEFECTS,
    Defect,
    SyntheticConfig,
    render_synthetic,
    synthetic_index,
)
from flowkit.models.data.synthetic_board import random_board
from flowkit.models.data.synthetic_defects import DRAWERS
from flowkit.models.data.synthetic_scenes import make_scene

SUBTLE = ("fabric", "steel", "pcb")
KINDS = [(c, d.value) for c in SUBTLE for d in SYNTHETIC_DEFECTS[c]]
# Per kind: the least fraction of mask pixels the defect changes, and the range of the mean
# absolute change inside the mask (of [0, 1] values). A moved board leaves a few pixels of
# its grain unchanged; a faint stain changes intensity by a few grey levels only.
VISIBILITY = {
    "faint_stain": (0.9, 0.004, 0.05),
    "hairline": (0.9, 0.01, 0.2),
    "weave": (0.9, 0.02, 0.3),
    "brushing": (0.9, 0.02, 0.3),
    "misplaced": (0.75, 0.01, 0.6),
    "missing": (0.9, 0.05, 0.7),
    "extra": (0.9, 0.05, 0.7),
    "shifted": (0.8, 0.02, 0.3),
}
sizes = st.sampled_from([32, 48, 64, 96, 128, 160, 256])
seeds = st.integers(0, 2**31 - 1)


def _config(size: int, seed: int) -> SyntheticConfig:
    return SyntheticConfig(image_size=size, seed=seed)


def _difference(sample) -> np.ndarray:
    """``[S, S, 3]`` absolute change in [0, 1] that the defect made."""
    return np.abs(sample.image.astype(np.float64) - sample.normal) / 255


def test_catalogue_is_complete() -> None:
    assert {d for _, d in KINDS} == set(VISIBILITY)
    assert set(DRAWERS) == set(Defect)


@pytest.mark.parametrize(("category", "defect"), KINDS)
@settings(max_examples=12)
@given(size=sizes, seed=seeds, index=st.integers(0, 50))
def test_masks_are_exact_at_any_size(category: str, defect: str, size: int, seed: int,
                                     index: int) -> None:
    sample = render_synthetic(category, "test", defect, index, _config(size, seed))
    assert sample.image.shape == sample.normal.shape == (size, size, 3)
    assert sample.mask.shape == (size, size) and sample.mask.dtype == np.bool_
    assert sample.mask.sum() >= max(8, 0.0015 * size * size)
    changed = (sample.image != sample.normal).any(axis=-1)
    assert not changed[~sample.mask].any()  # nothing outside the mask
    least_changed, low, high = VISIBILITY[defect]
    assert changed[sample.mask].mean() >= least_changed
    assert low <= _difference(sample)[sample.mask].mean() <= high


@settings(max_examples=12)
@pytest.mark.parametrize("category", SUBTLE)
@given(size=sizes, seed=seeds, index=st.integers(0, 50))
def test_hairline_is_one_pixel_wide(category: str, size: int, seed: int, index: int) -> None:
    mask = render_synthetic(category, "test", "hairline", index, _config(size, seed)).mask
    squares = mask[1:, 1:] & mask[:-1, 1:] & mask[1:, :-1] & mask[:-1, :-1]
    assert not squares.any()


@pytest.mark.parametrize(("category", "factors"), [("fabric", (0.7, 1.45)),
                                                  ("steel", (0.35, 2.5))])
@settings(max_examples=12)
@given(size=st.sampled_from([64, 96, 128, 256]), seed=seeds, data=st.data())
def test_redrawn_texture_keeps_colour_and_contrast(category: str, factors: tuple[float, float],
                                                   size: int, seed: int, data) -> None:
    """The weave or brushing defect's texture (another pitch, streak length or angle, in the
    drawers' ranges) has the surface's mean colour and nearly its contrast: only the
    structure differs."""
    rng = np.random.default_rng(seed)
    layout = make_scene(category, size, rng).layout
    factor = data.draw(st.floats(*factors))
    turn = data.draw(st.floats(-0.7, 0.7))
    redraw = layout.rewoven if category == "fabric" else layout.rebrushed
    normal = layout.render(size)
    for other in (redraw(rng, factor), redraw(rng, 1.0, turn)):
        image = other.render(size)
        np.testing.assert_allclose(image.mean((0, 1)), normal.mean((0, 1)), atol=0.01)
        assert abs(image.std() / normal.std() - 1) < 0.2
        assert np.abs(image - normal).mean() > 0.2 * normal.std()


@settings(max_examples=12)
@given(size=st.sampled_from([64, 128, 256]), seed=seeds, index=st.integers(0, 50))
def test_board_defects_stay_small_or_cover_the_board(size: int, seed: int, index: int) -> None:
    config = _config(size, seed)
    extra = render_synthetic("pcb", "test", "extra", index, config).mask
    misplaced = render_synthetic("pcb", "test", "misplaced", index, config).mask
    shifted = render_synthetic("pcb", "test", "shifted", index, config).mask
    assert extra.mean() < 0.01 and misplaced.mean() < 0.06
    # The whole board is the defect: its footprint before the move is in the mask.
    normal = render_synthetic("pcb", "test", "shifted", index, config).normal.astype(int)
    green = (normal[..., 1] > normal[..., 0] + 20) & (normal[..., 1] > normal[..., 2] + 20)
    assert green.mean() > 0.3 and shifted[green].mean() > 0.97


@pytest.mark.parametrize("category", SUBTLE)
@settings(max_examples=12)
@given(size=sizes, seed=seeds)
def test_normal_images_vary_and_have_empty_masks(category: str, size: int, seed: int) -> None:
    config = _config(size, seed)
    first, second = (render_synthetic(category, "train", GOOD, i, config) for i in range(2))
    assert not first.mask.any() and np.array_equal(first.image, first.normal)
    assert not np.array_equal(first.image, second.image)


@pytest.mark.parametrize(("category", "defect"), KINDS)
@settings(max_examples=12)
@given(seed=seeds, index=st.integers(0, 50))
def test_deterministic_per_seed(category: str, defect: str, seed: int, index: int) -> None:
    first = render_synthetic(category, "test", defect, index, _config(48, seed))
    again = render_synthetic(category, "test", defect, index, _config(48, seed))
    other = render_synthetic(category, "test", defect, index, _config(48, seed + 1))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.image, other.image)


def test_index_lists_every_defect() -> None:
    config = SyntheticConfig(num_test_good=1, num_test_per_defect=1)
    assert synthetic_index("fabric", "test", config) == [
        (GOOD, 0), ("faint_stain", 0), ("hairline", 0), ("weave", 0)]
    assert synthetic_index("steel", "test", config) == [
        (GOOD, 0), ("brushing", 0), ("faint_stain", 0), ("hairline", 0)]
    assert synthetic_index("pcb", "test", config) == [
        (GOOD, 0), ("extra", 0), ("hairline", 0), ("misplaced", 0), ("missing", 0),
        ("shifted", 0)]


@pytest.mark.parametrize(
    ("defect", "needs"),
    [(Defect.WEAVE, "Weave"), (Defect.BRUSHING, "Brushed"), (Defect.MISPLACED, "Board"),
     (Defect.EXTRA, "Board"), (Defect.SHIFTED, "Board")],
)
def test_redrawing_defects_refuse_other_scenes(defect: Defect, needs: str) -> None:
    scene = make_scene("brick", 64, np.random.default_rng(0))
    with pytest.raises(ValueError, match=f"needs a Scene whose layout is a {needs}"):
        DRAWERS[defect](scene, np.random.default_rng(1), 0.5, "brick")


@settings(max_examples=12)
@given(seed=seeds)
def test_board_moves_carry_its_parts(seed: int) -> None:
    """Moving the board by whole pixels moves the rendered picture by as many pixels."""
    board = random_board(np.random.default_rng(seed))
    size = 64
    image = board.render(size)
    moved = board.moved(shift=(3 / size, -2 / size)).render(size)
    # Inside the board (the table's vignette stays where it is).
    np.testing.assert_allclose(moved[23:47, 18:42], image[20:44, 20:44], atol=1e-5)
    turned = board.moved(turn=math.pi / 2)
    assert not np.allclose(turned.render(size), image)
