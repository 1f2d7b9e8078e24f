"""Image reading: grayscale, RGBA, 16-bit and palette images become RGB; bad files are named."""

import numpy as np
import pytest
from PIL import Image

from flowkit.models.data import DatasetError, read_image, read_mask, write_png


@pytest.mark.parametrize(
    ("pixels", "mode"),
    [
        (np.full((5, 7), 128, np.uint8), "L"),
        (np.dstack([np.full((5, 7), 128, np.uint8)] * 3 + [np.zeros((5, 7), np.uint8)]), "RGBA"),
        (np.dstack([np.full((5, 7), 128, np.uint8), np.full((5, 7), 9, np.uint8)]), "LA"),
    ],
)
def test_gray_and_alpha_images_become_rgb(tmp_path, pixels: np.ndarray, mode: str) -> None:
    path = tmp_path / "image.png"
    Image.fromarray(pixels, mode=mode).save(path)
    image = read_image(path)
    assert image.shape == (5, 7, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image, 128 / 255, rtol=1e-6)


def test_sixteen_bit_and_palette_images(tmp_path) -> None:
    Image.fromarray(np.full((3, 3), 65535, np.uint16)).save(tmp_path / "deep.png")
    assert read_image(tmp_path / "deep.png").max() == pytest.approx(1.0)
    Image.fromarray(np.full((3, 3, 3), 200, np.uint8)).convert("P").save(tmp_path / "pal.png")
    assert read_image(tmp_path / "pal.png").shape == (3, 3, 3)


def test_masks_are_nonzero_pixels(tmp_path) -> None:
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True
    write_png(tmp_path / "m.png", mask)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[1, 2, 0] = 255
    write_png(tmp_path / "rgb.png", rgb)
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png"), mask)


def test_unreadable_files_are_named(tmp_path) -> None:
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    write_png(tmp_path / "whole.png", np.random.default_rng(0).integers(0, 255, (32, 32, 3),
                                                                         dtype=np.uint8))
    data = (tmp_path / "whole.png").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    for path in (text, truncated, tmp_path / "absent.png"):
        with pytest.raises(DatasetError, match=f"cannot read image {path}"):
            read_image(path)
