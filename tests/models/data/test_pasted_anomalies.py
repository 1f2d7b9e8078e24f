"""Pasted anomalies: pixel-exact masks on any image, deterministic per (seed, index)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.models.data import SyntheticDataset
from flowkit.models.data.pasted_anomalies import (
    PASTED_DEFECTS,
    PastedAnomalies,
    paste_defect,
    pasted_rng,
)

SIZES = st.sampled_from([16, 24, 32, 48, 64])


def _image(size: int, seed: int) -> torch.Tensor:
    """A random non-constant image in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=generator)


@settings(max_examples=40, deadline=None)
@given(size=SIZES, seed=st.integers(0, 2**31), index=st.integers(0, 10**6),
       defect=st.sampled_from(PASTED_DEFECTS))
def test_the_mask_is_exactly_where_the_image_changed(size: int, seed: int, index: int,
                                                      defect: str) -> None:
    image = _image(size, seed)
    pasted, mask = paste_defect(image, defect, pasted_rng(seed, index))
    assert pasted.shape == image.shape and pasted.dtype == torch.float32
    assert mask.shape == (1, size, size) and set(mask.unique().tolist()) <= {0.0, 1.0}
    outside = mask[0] == 0
    assert torch.equal(pasted[:, outside], image[:, outside])  # bit for bit
    assert mask.sum() >= 4
    assert (pasted[:, ~outside] != image[:, ~outside]).any()  # the defect shows
    assert pasted.min() >= 0 and pasted.max() <= 1


@settings(max_examples=15, deadline=None)
@given(size=SIZES, seed=st.integers(0, 2**31), index=st.integers(0, 10**6),
       defect=st.sampled_from(PASTED_DEFECTS))
def test_a_paste_is_a_function_of_seed_and_index(size: int, seed: int, index: int,
                                                 defect: str) -> None:
    image = _image(size, 1)
    first = paste_defect(image, defect, pasted_rng(seed, index))
    again = paste_defect(image, defect, pasted_rng(seed, index))
    other = paste_defect(image, defect, pasted_rng(seed, index + 1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


@settings(max_examples=10, deadline=None)
@given(count=st.integers(1, 9), seed=st.integers(0, 100))
def test_every_held_out_image_comes_normal_and_with_a_defect(count: int, seed: int) -> None:
    normal = SyntheticDataset("gravel", "train", image_size=32, num_train=12)
    indices = sorted(torch.randperm(12, generator=torch.Generator().manual_seed(seed))[:count]
                     .tolist())
    pasted = PastedAnomalies(normal, indices, seed)
    items = [pasted[k] for k in range(len(pasted))]
    assert len(items) == 2 * count
    assert [item.label for item in items] == [0] * count + [1] * count
    for k, index in enumerate(indices):
        twin, defective = items[k], items[count + k]
        assert torch.equal(twin.image, normal[index].image) and not twin.mask.any()
        assert defective.defect == PASTED_DEFECTS[k % len(PASTED_DEFECTS)].value
        outside = defective.mask[0] == 0
        assert torch.equal(defective.image[:, outside], twin.image[:, outside])
        assert defective.path.startswith(twin.path)
    again = PastedAnomalies(normal, indices, seed)
    assert all(torch.equal(again[k].image, items[k].image) for k in range(len(items)))


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"square image \[3, S, S\].*got shape \(3, 16, 24\)"):
        paste_defect(torch.rand(3, 16, 24), "stain", pasted_rng(0, 0))
    with pytest.raises(ValueError, match=r"S >= 16, got shape \(3, 8, 8\)"):
        paste_defect(torch.rand(3, 8, 8), "stain", pasted_rng(0, 0))
    with pytest.raises(ValueError, match="cannot paste a missing .* choose from"):
        paste_defect(torch.rand(3, 16, 16), "missing", pasted_rng(0, 0))
    normal = SyntheticDataset("nut", "train", image_size=32, num_train=3)
    with pytest.raises(ValueError, match=r"indices in \[0, 3\), got \[1, 3\]"):
        PastedAnomalies(normal, [1, 3], 0)
    with pytest.raises(IndexError):
        PastedAnomalies(normal, [0], 0)[2]
