"""A torch ``Dataset`` over anomaly-detection folders: MVTec-AD, BTAD and a generic layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor
from torch.utils.data import Dataset

from .errors import DatasetError
from .image_io import read_image, read_mask
from .item import Item, Split, make_item
from .layouts import Layout, Sample, find_samples

__all__ = ["FolderDataset", "PairTransform", "as_size"]

PairTransform = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
"""A transform applied to ``(image [3, H, W], mask [1, H, W])`` together."""


def as_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``(height, width)`` from an int (square), a pair, or ``None`` (keep each image's size).

    Raises:
        ValueError: a non-positive size.
    """
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or any(not isinstance(s, int) or s < 1 for s in pair):
        raise ValueError(f"image_size must be a positive int or (height, width), got {size!r}")
    return pair


class FolderDataset(Dataset[Item]):
    """Images and masks of one category of a dataset on disk.

    Images are read as RGB (grayscale repeated, alpha dropped), resized bilinearly with
    antialiasing to ``image_size``; masks are resized with nearest neighbours.

    Args:
        root: the dataset folder; with ``category``, the category folder is ``root/category``.
        category: the category, or ``None`` when ``root`` is itself the category folder.
        split: ``train`` or ``test``.
        layout: ``mvtec``, ``btad`` or ``folder`` (see :class:`Layout`).
        image_size: ``(height, width)`` or an int for squares; ``None`` keeps the file's size.
        transform: applied to ``(image, mask)`` after resizing, e.g. texture augmentation.

    Raises:
        DatasetError: a missing or empty folder, a wrong layout or a missing mask; reading an
            unreadable image raises it from ``__getitem__``, naming the file.

    Example:
        >>> import tempfile
        >>> from flowkit.models.data import write_synthetic
        >>> root = write_synthetic(tempfile.mkdtemp(), categories=["brick"], image_size=32,
        ...                        num_train=2, num_test_good=1, num_test_per_defect=1)
        >>> item = FolderDataset(root, "brick", "test", image_size=16)[-1]
        >>> item.image.shape, item.mask.shape, item.label
        (torch.Size([3, 16, 16]), torch.Size([1, 16, 16]), 1)
    """

    def __init__(
        self,
        root: str | Path,
        category: str | None = None,
        split: Split | str = Split.TRAIN,
        layout: Layout | str = Layout.MVTEC,
        image_size: int | tuple[int, int] | None = 256,
        transform: PairTransform | None = None,
    ) -> None:
        self.category_dir = Path(root) if category is None else Path(root) / category
        self.split = Split(split)
        self.layout = Layout(layout)
        self.image_size = as_size(image_size)
        self.transform = transform
        self.samples: list[Sample] = find_samples(self.category_dir, self.split, self.layout)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Item:
        sample = self.samples[index]
        image = read_image(sample.image_path)
        mask = None if sample.mask_path is None else read_mask(sample.mask_path)
        if mask is not None and mask.shape != image.shape[:2]:
            raise DatasetError(
                f"mask {sample.mask_path} has size {mask.shape}, but its image "
                f"{sample.image_path} has size {image.shape[:2]}; they must match"
            )
        item = make_item(image, mask, sample.defect, str(sample.image_path), self.image_size)
        if self.transform is not None:
            image_t, mask_t = self.transform(item.image, item.mask)
            item = item._replace(image=image_t, mask=mask_t)
        return item
