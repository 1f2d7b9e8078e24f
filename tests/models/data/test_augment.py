"""Texture augmentation: flips and quarter turns, image and mask alike; textures only."""

import pytest
import torch

from flowkit.models.base import MODELS
from flowkit.models.data import (
    MVTEC_TEXTURES,
    SYNTHETIC_TEXTURES,
    Augmentation,
    TextureAugment,
    is_texture,
)


def test_texture_catalogue() -> None:
    assert set(MVTEC_TEXTURES) == {"carpet", "grid", "leather", "tile", "wood"}
    assert all(is_texture(name) for name in MVTEC_TEXTURES + SYNTHETIC_TEXTURES)
    assert not is_texture("bottle") and not is_texture("nut")


@pytest.mark.parametrize(("model", "category", "turned"), [
    ("pyramidflow", "carpet", True), ("pyramidflow", "wood", True),  # the official code's rule
    ("pyramidflow", "brick", False), ("pyramidflow", "fabric", False),  # measured: not better
    ("pyramidflow", "nut", False),
    ("csflow", "carpet", True), ("csflow", "brick", True), ("csflow", "fabric", True),  # textures
    ("csflow", "nut", False), ("csflow", "bottle", False),
])
def test_each_model_has_its_auto_rule(model: str, category: str, turned: bool) -> None:
    assert MODELS[model].augments_by_default(category) is turned


def test_an_unknown_augmentation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown augmentation 'yes'; choose one of 'auto', "
                       "'on', 'off'"):
        Augmentation("yes")


def test_image_and_mask_transformed_alike_and_all_eight_symmetries_reached() -> None:
    image = torch.arange(16.0).reshape(1, 4, 4).repeat(3, 1, 1)
    mask = torch.arange(16.0).reshape(1, 4, 4)
    augment = TextureAugment(torch.Generator().manual_seed(0))
    seen = set()
    for _ in range(200):
        out_image, out_mask = augment(image, mask)
        torch.testing.assert_close(out_image[0], out_mask[0])
        assert sorted(out_mask.flatten().tolist()) == list(range(16))  # a permutation
        seen.add(tuple(out_mask.flatten().tolist()))
    assert len(seen) == 8  # the dihedral group of the square


def test_non_square_images_keep_their_shape() -> None:
    image, mask = torch.rand(3, 4, 6), torch.rand(1, 4, 6)
    augment = TextureAugment(torch.Generator().manual_seed(1))
    for _ in range(50):
        out_image, out_mask = augment(image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
