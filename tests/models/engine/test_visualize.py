"""Pictures of a run: heat-map overlays, example choice, colour scale, ROC and PRO plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

from flowkit.models.data import SyntheticDataset
from flowkit.models.engine.evaluate import Evaluation, compute_metrics
from flowkit.models.engine.visualize import (
    map_value_range,
    save_curves,
    save_heatmaps,
    save_overlay,
    select_examples,
)

SIZE = 32


def _evaluation(dataset: SyntheticDataset) -> Evaluation:
    """An evaluation whose maps are the masks plus noise: a good detector."""
    items = [dataset[i] for i in range(len(dataset))]
    masks = torch.stack([item.mask for item in items]) > 0
    maps = masks.float() + 0.3 * torch.rand(masks.shape)
    return Evaluation(
        maps=maps, scores=maps.flatten(1).amax(1), masks=masks,
        labels=torch.tensor([item.label for item in items]),
        defects=[item.defect for item in items], paths=[item.path for item in items],
        model_seconds=1.0,
    )


@pytest.fixture(scope="module")
def dataset() -> SyntheticDataset:
    return SyntheticDataset("gravel", "test", image_size=SIZE, num_test_good=2,
                            num_test_per_defect=1)


def test_overlay_shows_the_map_where_it_is_high(tmp_path: Path) -> None:
    image = torch.full((3, SIZE, SIZE), 0.5)
    mask = torch.zeros(1, SIZE, SIZE)
    mask[:, 8:16, 8:16] = 1
    path = save_overlay(tmp_path / "sub" / "overlay.png", image, mask, mask * 2.0, (0.0, 2.0),
                        title="a title")
    pixels = skio.imread(path)[..., :3].astype(np.int16)
    height, width = pixels.shape[:2]
    assert width > 2.5 * height  # three panels side by side
    middle_row = pixels[height // 2]
    # The plain image panel is gray (R = G = B); the map panel has inferno colours.
    assert np.abs(middle_row[:, 0] - middle_row[:, 2]).max() > 60


def test_select_examples_takes_the_first_of_each_defect() -> None:
    defects = ["good", "good", "good", "hole", "hole", "hole", "scratch"]
    assert select_examples(defects, per_defect=2) == [0, 1, 3, 4, 6]
    assert select_examples(["hole"], per_defect=1) == [0]


def test_value_range_ignores_a_few_extreme_pixels() -> None:
    maps = torch.rand(2, 1, 64, 64)
    maps[0, 0, 0, 0] = 1e6
    low, high = map_value_range(maps)
    assert 0 <= low < 0.01 and 0.99 < high < 1.0
    constant = map_value_range(torch.ones(1, 1, 4, 4))
    assert constant[1] > constant[0] == 1.0


def test_heatmaps_and_curves_are_written(dataset: SyntheticDataset, tmp_path: Path) -> None:
    evaluation = _evaluation(dataset)
    written = save_heatmaps(tmp_path / "heatmaps", dataset, evaluation, per_defect=1)
    assert [p.name for p in written] == ["good_0000.png", "hole_0002.png", "patch_0003.png",
                                         "scratch_0004.png", "stain_0005.png"]
    metrics = compute_metrics(evaluation)
    assert metrics["image_auroc"] == 1.0
    curves = save_curves(tmp_path / "curves", evaluation, metrics)
    assert [p.name for p in curves] == ["roc.png", "pro.png"]
    for path in [*written, *curves]:
        assert skio.imread(path).ndim == 3
