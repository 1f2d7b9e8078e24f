"""Data for anomaly localization: MVTec-AD, BTAD and generic folders, and synthetic defects."""

from .augment import (
    AUGMENT_PROBABILITY,
    MVTEC_TEXTURES,
    Augmentation,
    TextureAugment,
    is_texture,
)
from .errors import DatasetError
from .folder import FolderDataset, PairTransform, as_size
from .image_io import IMAGE_SUFFIXES, read_image, read_mask, read_size, write_png
from .item import GOOD, Choice, Item, Split
from .layouts import Layout, Sample, find_samples
from .synthetic import (
    DEFAULT_IMAGE_SIZE,
    SYNTHETIC_CATEGORIES,
    SYNTHETIC_DEFECTS,
    SYNTHETIC_OBJECTS,
    SYNTHETIC_TEXTURES,
    Defect,
    SyntheticConfig,
    SyntheticDataset,
    SyntheticImage,
    render_synthetic,
    synthetic_index,
    write_synthetic,
)

__all__ = [
    "AUGMENT_PROBABILITY",
    "DEFAULT_IMAGE_SIZE",
    "GOOD",
    "IMAGE_SUFFIXES",
    "MVTEC_TEXTURES",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DEFECTS",
    "SYNTHETIC_OBJECTS",
    "SYNTHETIC_TEXTURES",
    "Augmentation",
    "Choice",
    "DatasetError",
    "Defect",
    "FolderDataset",
    "Item",
    "Layout",
    "PairTransform",
    "Sample",
    "Split",
    "SyntheticConfig",
    "SyntheticDataset",
    "SyntheticImage",
    "TextureAugment",
    "as_size",
    "find_samples",
    "is_texture",
    "read_image",
    "read_mask",
    "read_size",
    "render_synthetic",
    "synthetic_index",
    "write_png",
    "write_synthetic",
]
