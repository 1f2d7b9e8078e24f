"""The synthetic dataset: deterministic, exact masks, every category and defect, round trip."""

import numpy as np
import pytest
import torch

from flowkit.models.data import (
    GOOD,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DEFECTS,
    SYNTHETIC_OBJECTS,
    SYNTHETIC_TEXTURES,
    Defect,
    FolderDataset,
    SyntheticConfig,
    SyntheticDataset,
    render_synthetic,
    synthetic_index,
    write_synthetic,
)

SMALL = SyntheticConfig(image_size=64, num_train=2, num_test_good=2, num_test_per_defect=2)
ALL_KINDS = [(c, d.value) for c in SYNTHETIC_CATEGORIES for d in SYNTHETIC_DEFECTS[c]]
# fabric, steel and pcb are subtle on purpose: tests/models/data/test_synthetic_subtle.py
CLEAR_KINDS = [(c, d) for c, d in ALL_KINDS if c not in ("fabric", "steel", "pcb")]


def test_catalogue() -> None:
    assert set(SYNTHETIC_TEXTURES) >= {"brick", "grass", "gravel", "fabric", "steel"}
    assert set(SYNTHETIC_OBJECTS) >= {"nut", "pcb"}
    for texture in ("brick", "grass", "gravel"):
        assert set(SYNTHETIC_DEFECTS[texture]) == {
            Defect.SCRATCH, Defect.STAIN, Defect.HOLE, Defect.PATCH}
    for obj in SYNTHETIC_OBJECTS:
        assert Defect.MISSING in SYNTHETIC_DEFECTS[obj]


@pytest.mark.parametrize(("category", "defect"), CLEAR_KINDS)
def test_defect_masks_are_exact(category: str, defect: str) -> None:
    for index in range(2):
        sample = render_synthetic(category, "test", defect, index, SMALL)
        assert sample.image.shape == (64, 64, 3) and sample.image.dtype == np.uint8
        assert sample.mask.dtype == np.bool_ and sample.mask.sum() >= 8
        changed = (sample.image != sample.normal).any(axis=-1)
        # Outside the mask nothing changed; inside, the defect is visible.
        assert not changed[~sample.mask].any()
        assert changed[sample.mask].mean() > 0.9
        difference = np.abs(sample.image.astype(float) - sample.normal) / 255
        assert difference[sample.mask].mean() > 0.05


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_normal_images_have_empty_masks_and_vary(category: str) -> None:
    first, second = (render_synthetic(category, "train", GOOD, i, SMALL) for i in range(2))
    assert not first.mask.any() and np.array_equal(first.image, first.normal)
    assert not np.array_equal(first.image, second.image)
    # Train and test are independent streams.
    test_first = render_synthetic(category, "test", GOOD, 0, SMALL)
    assert not np.array_equal(first.image, test_first.image)


def test_deterministic_per_seed() -> None:
    for category, defect in ALL_KINDS:
        again = render_synthetic(category, "test", defect, 1, SMALL)
        same = render_synthetic(category, "test", defect, 1, SMALL)
        assert np.array_equal(again.image, same.image) and np.array_equal(again.mask, same.mask)
    other_seed = SyntheticConfig(image_size=64, seed=1)
    assert not np.array_equal(render_synthetic("brick", "test", "hole", 0, SMALL).image,
                              render_synthetic("brick", "test", "hole", 0, other_seed).image)


def test_defects_vary_between_images() -> None:
    masks = [render_synthetic("grass", "test", "stain", i, SMALL).mask for i in range(3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])


def test_dataset_items_and_every_defect_present() -> None:
    dataset = SyntheticDataset("nut", "test", image_size=64, num_test_good=1,
                               num_test_per_defect=1)
    items = [dataset[i] for i in range(len(dataset))]
    assert [item.defect for item in items] == [GOOD, "missing", "scratch", "stain"]
    assert [item.label for item in items] == [0, 1, 1, 1]
    for item in items:
        assert item.image.shape == (3, 64, 64) and item.image.dtype == torch.float32
        assert item.mask.shape == (1, 64, 64)
        assert float(item.image.min()) >= 0 and float(item.image.max()) <= 1
        assert bool(item.mask.any()) == bool(item.label)


def test_write_then_load_round_trip(tmp_path) -> None:
    counts = {"num_train": 2, "num_test_good": 1, "num_test_per_defect": 1}
    root = write_synthetic(tmp_path, categories=["gravel", "nut"], image_size=48, **counts)
    for category in ("gravel", "nut"):
        for split in ("train", "test"):
            loaded = FolderDataset(root, category, split, image_size=None)
            memory = SyntheticDataset(category, split, image_size=48, **counts)
            assert len(loaded) == len(memory) == len(synthetic_index(
                category, split, SyntheticConfig(48, **counts)))
            for disk_item, memory_item in zip(loaded, memory, strict=True):
                torch.testing.assert_close(disk_item.image, memory_item.image, rtol=0, atol=0)
                torch.testing.assert_close(disk_item.mask, memory_item.mask, rtol=0, atol=0)
                assert disk_item.label == memory_item.label
                assert disk_item.defect == memory_item.defect
                assert disk_item.path.endswith(memory_item.path)
    assert (root / "nut" / "ground_truth" / "missing" / "000_mask.png").is_file()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: render_synthetic("carpet", "test", "hole", 0), "unknown synthetic category"),
        (lambda: render_synthetic("nut", "test", "hole", 0), "has no defect 'hole'"),
        (lambda: SyntheticConfig(image_size=8), "at least 32"),
        (lambda: SyntheticConfig(num_train=-1), "non-negative"),
        (lambda: SyntheticDataset("brick", "validation"),
         "unknown split 'validation'; choose one of 'train', 'test'"),
    ],
)
def test_errors(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
