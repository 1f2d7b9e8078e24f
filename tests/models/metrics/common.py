"""Shared data of the metrics tests: strategies with tied scores, a hand example, regions."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from skimage.measure import label

__all__ = [
    "STRICTLY_INCREASING",
    "TIED_SCORES",
    "hand_example",
    "maps_and_masks",
    "reference_regions",
    "scored_labels",
]

# Few distinct values, so that ties are frequent.
TIED_SCORES = st.integers(min_value=-6, max_value=6)


@st.composite
def scored_labels(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Scores (with ties) and binary labels containing both classes."""
    n = draw(st.integers(min_value=2, max_value=40))
    scores = draw(arrays(np.float64, n, elements=TIED_SCORES.map(float)))
    labels = draw(arrays(np.bool_, n).filter(lambda lab: 0 < lab.sum() < lab.size))
    return scores, labels


@st.composite
def maps_and_masks(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    """Tiny maps with tied scores and masks with at least one defect and one normal pixel."""
    num = draw(st.integers(min_value=1, max_value=3))
    height, width = draw(st.integers(2, 6)), draw(st.integers(2, 6))
    shape = (num, height, width)
    maps = draw(arrays(np.float32, shape, elements=TIED_SCORES.map(float)))
    masks = draw(arrays(np.bool_, shape).filter(lambda m: 0 < m.sum() < m.size))
    return maps, masks


STRICTLY_INCREASING = [
    lambda x: 3.0 * x + 7.0,
    lambda x: x**3 + x,
    lambda x: torch.exp(x / 4),
    torch.atan,
]


def hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    """Two regions (sizes 2 and 1), five normal pixels, a tie across classes at 0.4."""
    maps = torch.tensor([[[0.9, 0.4, 0.8, 0.4], [0.1, 0.2, 0.3, 0.6]]])
    masks = torch.tensor([[[1, 1, 0, 0], [0, 0, 0, 1]]])
    return maps, masks


def reference_regions(masks: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(image index, region mask) for every 8-connected region, labelled image by image."""
    regions = []
    for index, mask in enumerate(masks):
        labelled = label(mask, connectivity=2)
        regions += [(index, labelled == k) for k in range(1, labelled.max() + 1)]
    return regions
