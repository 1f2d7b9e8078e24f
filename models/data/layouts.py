"""Folder layouts of anomaly datasets (MVTec-AD, BTAD, generic) and the index of their files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DatasetError
from .image_io import IMAGE_SUFFIXES
from .item import GOOD, Choice, Split

__all__ = ["GROUND_TRUTH_DIR", "Layout", "LayoutSpec", "Sample", "find_samples", "spec_of"]

GROUND_TRUTH_DIR = "ground_truth"


class Layout(Choice):
    """Supported dataset layouts.

    - ``mvtec``: ``train/good/*.png``, ``test/<defect>/*.png``,
      ``ground_truth/<defect>/<name>_mask.png`` (MVTec AD, and what ``write_synthetic`` writes).
    - ``btad``: ``train/ok/*.bmp|png``, ``test/ok``, ``test/ko``,
      ``ground_truth/ko/<name>.png|bmp`` (BTAD: masks named as the image, extensions vary by
      category).
    - ``folder``: a generic layout: ``train/good``, ``test/good``, ``test/<defect>``,
      ``ground_truth/<defect>/<name>_mask.<ext>`` or ``<name>.<ext>``, any image extension.
    """

    MVTEC = "mvtec"
    BTAD = "btad"
    FOLDER = "folder"


@dataclass(frozen=True)
class LayoutSpec:
    """How a layout names things on disk.

    Attributes:
        normal_dir: the folder of normal images under ``train/`` and ``test/``.
        image_suffixes: accepted image file endings (lower case).
        mask_suffixes: accepted mask file endings (lower case).
        mask_stem_suffixes: appended to an image's stem to name its mask, tried in order.
    """

    normal_dir: str
    image_suffixes: tuple[str, ...]
    mask_suffixes: tuple[str, ...]
    mask_stem_suffixes: tuple[str, ...]


_SPECS = {
    Layout.MVTEC: LayoutSpec(GOOD, (".png",), (".png",), ("_mask",)),
    Layout.BTAD: LayoutSpec("ok", (".bmp", ".png"), (".png", ".bmp"), ("",)),
    Layout.FOLDER: LayoutSpec(GOOD, IMAGE_SUFFIXES, IMAGE_SUFFIXES, ("_mask", "")),
}


def spec_of(layout: Layout | str) -> LayoutSpec:
    """The naming rules of ``layout``.

    Raises:
        ValueError: an unknown layout name.
    """
    return _SPECS[Layout(layout)]


@dataclass(frozen=True)
class Sample:
    """One image file of a dataset and, for a defective image, its mask file.

    Attributes:
        image_path: the image.
        mask_path: its ground-truth mask, ``None`` for a normal image.
        defect: the defect type, ``"good"`` for a normal image.
    """

    image_path: Path
    mask_path: Path | None
    defect: str


def _subdirs(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _require_dir(folder: Path, what: str) -> None:
    """Raise a DatasetError unless ``folder`` is a directory, saying what is there instead."""
    if folder.is_dir():
        return
    parent = folder.parent
    found = _subdirs(parent) if parent.is_dir() else None
    where = f"; {parent} holds the folders {found}" if found is not None else ""
    raise DatasetError(f"missing {what}: expected the folder {folder}{where}")


def _images_in(folder: Path, spec: LayoutSpec) -> list[Path]:
    """The image files of ``folder``, sorted; a DatasetError if there is none."""
    images = sorted(
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in spec.image_suffixes
    )
    if not images:
        others = sorted(p.name for p in folder.iterdir())[:5]
        hint = ""
        if any(Path(name).suffix.lower() in _SPECS[Layout.FOLDER].image_suffixes
               for name in others):
            hint = (f"; the generic layout takes {', '.join(IMAGE_SUFFIXES)}: pass --data "
                    "folder (README: Datasets)")
        raise DatasetError(
            f"no images in {folder}: expected files ending in {', '.join(spec.image_suffixes)}"
            + (f", found {others}" if others else ", the folder is empty") + hint
        )
    return images


def _mask_of(image: Path, mask_dir: Path, spec: LayoutSpec) -> Path:
    """The mask file of a defective ``image``; a DatasetError naming the names tried."""
    candidates = [
        mask_dir / f"{image.stem}{stem_suffix}{suffix}"
        for stem_suffix in spec.mask_stem_suffixes
        for suffix in spec.mask_suffixes
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = ", ".join(c.name for c in candidates)
    raise DatasetError(f"no mask for the defective image {image}: looked in {mask_dir} for {tried}")


def find_samples(category_dir: str | Path, split: Split | str,
                 layout: Layout | str = Layout.MVTEC) -> list[Sample]:
    """Index the images of one category and split, with their masks.

    Args:
        category_dir: the category's folder (it holds ``train/``, ``test/``, ``ground_truth/``).
        split: ``train`` (normal images only) or ``test``.
        layout: the folder layout.

    Returns:
        The samples, normal ones first, each group sorted by file name.

    Raises:
        DatasetError: a missing or empty folder, an unexpected layout, or a missing mask.
    """
    spec, split = spec_of(layout), Split(split)
    category_dir = Path(category_dir)
    if not category_dir.is_dir():
        raise DatasetError(f"dataset folder {category_dir} does not exist; check the path "
                           "(--data-root, --category)")
    split_dir = category_dir / split.value
    if not split_dir.is_dir():
        raise DatasetError(
            f"wrong layout in {category_dir}: expected the folders train/ and test/ "
            f"(layout {Layout(layout).value!r}), found {_subdirs(category_dir)}"
        )
    normal_dir = split_dir / spec.normal_dir
    if not normal_dir.is_dir():
        raise DatasetError(
            f"wrong layout in {split_dir}: expected a folder {spec.normal_dir!r} of normal images "
            f"(layout {Layout(layout).value!r}), found {_subdirs(split_dir)}"
        )
    samples = [Sample(path, None, GOOD) for path in _images_in(normal_dir, spec)]
    if split is Split.TRAIN:
        return samples
    for defect in _subdirs(split_dir):
        if defect == spec.normal_dir:
            continue
        mask_dir = category_dir / GROUND_TRUTH_DIR / defect
        _require_dir(mask_dir, f"ground-truth masks for the defect type {defect!r}")
        samples += [
            Sample(path, _mask_of(path, mask_dir, spec), defect)
            for path in _images_in(split_dir / defect, spec)
        ]
    return samples
