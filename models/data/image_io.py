"""Reading images and masks from disk as RGB float arrays and binary masks, and writing PNGs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import io as skio
from skimage.util import img_as_float32, img_as_ubyte

from .errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "read_image", "read_mask", "read_size", "write_png"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""File name endings read as images (compared in lower case)."""

_GRAY_NDIM = 2
_RGB_CHANNELS = 3
_GRAY_ALPHA_CHANNELS = 2


def _unreadable(path: Path, error: Exception) -> DatasetError:
    """The error for a file that is not a readable image."""
    reason = (str(error).splitlines() or [""])[0]
    return DatasetError(
        f"cannot read image {path}: {type(error).__name__}: {reason}; "
        "the file is truncated, corrupt or not an image — replace or remove it"
    )


def read_size(path: str | Path) -> tuple[int, int]:
    """An image's ``(height, width)`` from its header, with its structure checked.

    Pillow's ``verify`` walks the file's blocks and their checksums without decoding the
    pixels (a truncated PNG fails here), so a whole dataset is checked in seconds.

    Args:
        path: an image file.

    Returns:
        ``(height, width)``.

    Raises:
        DatasetError: the file is missing, truncated, corrupt or not an image.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. decompression-bomb or palette warnings
            with Image.open(path) as image:
                width, height = image.size
                image.verify()
    except Exception as error:  # Pillow raises many types for bad files
        raise _unreadable(path, error) from error
    return height, width


def _read(path: Path) -> np.ndarray:
    """The pixel array of ``path``, or a DatasetError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. low-contrast or palette warnings
            pixels = skio.imread(path)
    except Exception as error:  # imageio/Pillow raise many types for bad files
        raise _unreadable(path, error) from error
    if pixels.ndim not in (_GRAY_NDIM, _GRAY_NDIM + 1) or pixels.size == 0:
        raise DatasetError(
            f"{path} is not a single 2-D image: its pixel array has shape {pixels.shape}"
        )
    return pixels


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB.

    Grayscale images are repeated over three channels; an alpha channel is dropped (as
    ``PIL.Image.convert("RGB")`` does); 8- and 16-bit and float images are scaled to [0, 1].

    Args:
        path: an image file.

    Returns:
        ``[H, W, 3]`` float32 array in [0, 1].

    Raises:
        DatasetError: the file is missing, unreadable or not an image.
    """
    pixels = _read(Path(path))
    if pixels.ndim == _GRAY_NDIM:
        pixels = pixels[..., None]
    if pixels.shape[-1] == _GRAY_ALPHA_CHANNELS:
        pixels = pixels[..., :1]
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, _RGB_CHANNELS, axis=-1)
    return img_as_float32(pixels[..., :_RGB_CHANNELS])


def read_mask(path: str | Path) -> np.ndarray:
    """Read a ground-truth mask: a pixel is a defect when any colour channel is non-zero.

    Args:
        path: a mask image file (MVTec-AD stores 0/255 grayscale PNGs).

    Returns:
        ``[H, W]`` bool array.

    Raises:
        DatasetError: the file is missing, unreadable or not an image.
    """
    pixels = _read(Path(path))
    if pixels.ndim > _GRAY_NDIM:
        channels = pixels.shape[-1]
        # Ignore an alpha channel; keep colour channels.
        colour = pixels[..., : 1 if channels == _GRAY_ALPHA_CHANNELS else _RGB_CHANNELS]
        return (colour > 0).any(axis=-1)
    return pixels > 0


def write_png(path: str | Path, pixels: np.ndarray) -> None:
    """Write an image (uint8, or float in [0, 1], or bool as 0/255) as a PNG.

    Args:
        path: destination; its folder is created when missing.
        pixels: ``[H, W]`` or ``[H, W, 3]``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skio.imsave(path, img_as_ubyte(pixels), check_contrast=False)
