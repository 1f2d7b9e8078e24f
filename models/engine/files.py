"""Files that appear whole or not at all: atomic writes of files, folders and JSON."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import RunFolderError

__all__ = ["TEMPORARY_GLOB", "atomic_folder", "atomic_write", "read_json", "write_json"]

_TEMPORARY_SUFFIX = ".tmp"
TEMPORARY_GLOB = f".*{_TEMPORARY_SUFFIX}"
"""The glob of the temporary files and folders the atomic writes use."""


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file so that it either appears whole or not at all.

    ``write`` fills a temporary file in the destination's folder, which is flushed, fsynced
    and renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows); the folder is
    fsynced so the rename survives a power loss. On any error the temporary file is removed
    and an existing ``path`` is left untouched.

    Args:
        path: the destination; its folder must exist.
        write: writes the content to the binary file object it is given.
    """
    path = Path(path)
    handle = tempfile.NamedTemporaryFile(
        dir=path.parent, prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, delete=False
    )
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:  # also KeyboardInterrupt: never leave the temporary file behind
        Path(handle.name).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Fill a folder that appears whole or not at all.

    Yields a temporary folder beside ``path`` (its parents are created); when the block ends
    without an error, an existing ``path`` is deleted and the temporary folder renamed to
    it; on any error (also ``KeyboardInterrupt``) the temporary folder is deleted and
    ``path`` is left untouched. Whether ``path`` may be replaced is the caller's to check.

    Args:
        path: the folder to create or replace.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its folders are private (0700), this one becomes the result.
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}{_TEMPORARY_SUFFIX}"
    temporary.mkdir()
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(temporary, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the platform can open folders)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    text = json.dumps(data, indent=2, sort_keys=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode()))


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a :class:`RunFolderError` naming the file if it is missing or bad."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as error:
        raise RunFolderError(f"missing {path}; is {path.parent} a flowkit run folder?") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error}); restore or delete it") from error
