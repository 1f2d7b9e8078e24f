"""Texture augmentation: flips and quarter turns, image and mask alike; textures only."""

import pytest
import torch

from flowkit.models.data import (
    MVTEC_TEXTURES,
    SYNTHETIC_CATEGORIES,
    Augmentation,
    TextureAugment,
    augmented_by_default,
)


def test_texture_catalogue() -> None:
    assert set(MVTEC_TEXTURES) == {"carpet", "grid", "leather", "tile", "wood"}


@pytest.mark.parametrize(("category", "by_default"), [
    *((name, True) for name in MVTEC_TEXTURES),  # the official code's rule
    *((name, False) for name in SYNTHETIC_CATEGORIES),  # measured: never better turned
    ("bottle", False), ("screw", False),  # MVTec AD's aligned objects
])
def test_auto_turns_mvtec_textures_only_and_on_off_decide_for_every_category(
        category: str, by_default: bool) -> None:
    assert augmented_by_default(category) is by_default
    assert Augmentation("auto").applies_to(category) is by_default
    assert Augmentation("on").applies_to(category)
    assert not Augmentation("off").applies_to(category)


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
