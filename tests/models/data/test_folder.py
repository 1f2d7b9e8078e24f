"""Folder datasets: MVTec-AD, BTAD and generic layouts, resizing, and every error case."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from flowkit.models.data import DatasetError, FolderDataset, Layout, TextureAugment, find_samples

SIZE = 12


def _image(path: Path, value: int = 100, mode: str = "RGB", size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = np.full((size, size, channels), value, np.uint8).squeeze(-1 if channels == 1 else ())
    Image.fromarray(pixels, mode=mode).save(path)


def _mask(path: Path, size: int = SIZE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((size, size), np.uint8)
    pixels[2:5, 3:7] = 255
    Image.fromarray(pixels).save(path)


def _btad(root: Path) -> Path:
    """A tiny BTAD category: bmp images, masks named as the image, png or bmp."""
    category = root / "03"
    _image(category / "train" / "ok" / "0000.bmp")
    _image(category / "train" / "ok" / "0001.bmp")
    _image(category / "test" / "ok" / "0000.bmp")
    _image(category / "test" / "ko" / "0000.bmp", 200)
    _image(category / "test" / "ko" / "0001.png", 200)
    _mask(category / "ground_truth" / "ko" / "0000.png")
    _mask(category / "ground_truth" / "ko" / "0001.bmp")
    return root


def _generic(root: Path) -> Path:
    """A generic folder: jpg and png, masks with and without the _mask suffix."""
    _image(root / "train" / "good" / "a.jpg", mode="L")
    _image(root / "test" / "good" / "b.png", mode="RGBA")
    _image(root / "test" / "crack" / "c.png", 200)
    _image(root / "test" / "dent" / "d.jpg", 200)
    _mask(root / "ground_truth" / "crack" / "c_mask.png")
    _mask(root / "ground_truth" / "dent" / "d.png")
    return root


def test_btad_layout(tmp_path: Path) -> None:
    root = _btad(tmp_path)
    train = FolderDataset(root, "03", "train", Layout.BTAD, image_size=8)
    test = FolderDataset(root, "03", "test", "btad", image_size=8)
    assert len(train) == 2 and [item.defect for item in test] == ["good", "ko", "ko"]
    assert [item.label for item in test] == [0, 1, 1]
    defect = test[2]
    assert defect.path.endswith("0001.png") and defect.image.shape == (3, 8, 8)
    assert defect.mask.shape == (1, 8, 8) and set(defect.mask.unique().tolist()) == {0.0, 1.0}


def test_generic_layout_converts_gray_and_rgba(tmp_path: Path) -> None:
    root = _generic(tmp_path / "parts")
    test = FolderDataset(root, None, "test", Layout.FOLDER, image_size=None)
    assert [item.defect for item in test] == ["good", "crack", "dent"]
    for item in test:
        assert item.image.shape == (3, SIZE, SIZE)
    train = FolderDataset(root, split="train", layout="folder", image_size=(6, 10))
    assert train[0].image.shape == (3, 6, 10)
    torch.testing.assert_close(train[0].image, torch.full((3, 6, 10), 100 / 255))


def test_masks_resized_with_nearest_neighbours_and_batched(tmp_path: Path) -> None:
    root = _generic(tmp_path)
    dataset = FolderDataset(root, split="test", layout="folder", image_size=6,
                            transform=TextureAugment(torch.Generator().manual_seed(0)))
    batch = next(iter(DataLoader(dataset, batch_size=3)))
    assert batch.image.shape == (3, 3, 6, 6) and batch.mask.shape == (3, 1, 6, 6)
    assert set(batch.mask.unique().tolist()) == {0.0, 1.0}
    assert batch.label.tolist() == [0, 1, 1] and len(batch.path) == 3


def test_mvtec_layout_names(tmp_path: Path) -> None:
    category = tmp_path / "bottle"
    _image(category / "train" / "good" / "000.png")
    _image(category / "test" / "good" / "000.png")
    _image(category / "test" / "broken" / "000.png")
    _mask(category / "ground_truth" / "broken" / "000_mask.png")
    samples = find_samples(category, "test")
    assert [s.mask_path.name if s.mask_path else None for s in samples] == [None, "000_mask.png"]


def _write_mvtec(tmp_path: Path) -> Path:
    category = tmp_path / "cat"
    _image(category / "train" / "good" / "000.png")
    _image(category / "test" / "good" / "000.png")
    _image(category / "test" / "hole" / "000.png")
    _mask(category / "ground_truth" / "hole" / "000_mask.png")
    return category


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()


@pytest.mark.parametrize(
    ("breakage", "split", "message"),
    [
        (lambda c: _remove(c), "train", "does not exist"),
        (lambda c: _remove(c / "train"), "train",
         r"expected the folders train/ and test/ .*found \['ground_truth', 'test'\]"),
        (lambda c: (c / "train" / "good").rename(c / "train" / "ok"), "train",
         r"expected a folder 'good'.*found \['ok'\]"),
        (lambda c: (c / "train" / "good" / "000.png").unlink(), "train", "folder is empty"),
        (lambda c: (c / "train" / "good" / "000.png").rename(c / "train" / "good" / "0.txt"),
         "train", r"ending in \.png, found \['0.txt'\]"),
        (lambda c: (c / "ground_truth" / "hole" / "000_mask.png").unlink(), "test",
         r"no mask for the defective image .*000.png: .*000_mask.png"),
        (lambda c: _remove(c / "ground_truth"), "test",
         r"missing ground-truth masks for the defect type 'hole'"),
    ],
)
def test_layout_errors(tmp_path: Path, breakage, split: str, message: str) -> None:
    category = _write_mvtec(tmp_path)
    breakage(category)
    with pytest.raises(DatasetError, match=message):
        FolderDataset(category, split=split)


def test_unreadable_image_named_when_loaded(tmp_path: Path) -> None:
    category = _write_mvtec(tmp_path)
    bad = category / "train" / "good" / "001.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    dataset = FolderDataset(category, split="train")
    with pytest.raises(DatasetError, match="cannot read image .*001.png"):
        dataset[1]


def test_mask_of_another_size_is_refused(tmp_path: Path) -> None:
    category = _write_mvtec(tmp_path)
    _mask(category / "ground_truth" / "hole" / "000_mask.png", size=SIZE + 1)
    with pytest.raises(DatasetError, match="must match"):
        FolderDataset(category, split="test")[1]


def test_argument_errors(tmp_path: Path) -> None:
    category = _write_mvtec(tmp_path)
    with pytest.raises(ValueError, match="unknown layout 'kaggle'"):
        FolderDataset(category, layout="kaggle")
    with pytest.raises(ValueError, match="image_size must be"):
        FolderDataset(category, image_size=0)
    assert issubclass(DatasetError, ValueError)
