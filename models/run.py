"""A training run: its settings (model, data, optimization) and its folder on disk.

A run folder holds everything a run produces::

    runs/<name>/
        config.json          the full RunConfig (model config, data settings, optimization)
        history.json         per-epoch mean loss, steps and seconds
        train.log            one line per epoch and per stage
        metrics.json         test metrics of the final model, with timing
        threshold.json       anomaly thresholds from the normal training images (predict)
        checkpoints/last.pt  written after every epoch, and on SIGINT/SIGTERM (resume point)
        checkpoints/final.pt the reported model: after the last epoch and ``fit_normal``
        heatmaps/*.png       image | ground truth | anomaly map, for a few test images
        curves/roc.png, curves/pro.png

Every file is written atomically (a temporary file in the same folder, fsync, rename), so an
interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from torch.utils.data import Dataset

from .data import Choice, FolderDataset, Item, PairTransform, SyntheticDataset, is_texture
from .errors import RunFolderError

__all__ = [
    "DataSettings",
    "DataSource",
    "RunConfig",
    "RunFolder",
    "RunMode",
    "atomic_folder",
    "atomic_write",
    "read_json",
    "write_json",
]

SYNTHETIC_DATA_SEED = 0
"""The synthetic dataset is the same for every run, whatever the training seed."""

_TEMPORARY_SUFFIX = ".tmp"
_TEMPORARY = f".*{_TEMPORARY_SUFFIX}"  # the glob of atomic_write's temporary files


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


class DataSource(Choice):
    """Where the images come from: rendered in memory, or a folder layout on disk."""

    SYNTHETIC = "synthetic"
    MVTEC = "mvtec"
    BTAD = "btad"
    FOLDER = "folder"


@dataclass(frozen=True)
class DataSettings:
    """Which images a run trains and tests on.

    Attributes:
        source: a :class:`DataSource` value.
        root: the dataset folder (``None`` for synthetic data).
        category: the category; for ``folder`` data ``None`` means ``root`` is the category.
        image_size: images are resized to ``image_size x image_size``.
    """

    source: str
    root: str | None
    category: str | None
    image_size: int

    @property
    def name(self) -> str:
        """The category, or the folder's name when the root is the category."""
        return self.category if self.category is not None else Path(self.root or "").name

    @property
    def augment(self) -> bool:
        """Whether training images are flipped and rotated (texture categories only)."""
        return is_texture(self.name)

    def dataset(self, split: str, transform: PairTransform | None = None) -> Dataset[Item]:
        """The ``train`` or ``test`` images.

        Raises:
            DatasetError: a missing or empty folder, a wrong layout.
        """
        source = DataSource(self.source)
        if source is DataSource.SYNTHETIC:
            return SyntheticDataset(self.name, split, image_size=self.image_size,
                                    seed=SYNTHETIC_DATA_SEED, transform=transform)
        return FolderDataset(self.root or "", self.category, split, layout=source.value,
                             image_size=self.image_size, transform=transform)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's result (not where or how fast it runs).

    Attributes:
        model: the registry name of the model.
        model_config: the model's constructor arguments, complete.
        data: the images.
        epochs: training epochs.
        batch_size: training batch size (also used for evaluation).
        seed: seeds torch, numpy, ``random`` and the data order.
        optimizer: Adam's arguments plus ``clip_grad_norm`` (``None``: no clipping).
    """

    model: str
    model_config: dict[str, Any]
    data: DataSettings
    epochs: int
    batch_size: int
    seed: int
    optimizer: dict[str, Any]

    def __post_init__(self) -> None:
        # Stored as JSON stores them (tuples as lists), so a config read back compares equal.
        for name in ("model_config", "optimizer"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name))))

    def to_json(self) -> dict[str, Any]:
        """The config as JSON-able data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_json`.

        Raises:
            RunFolderError: missing or unknown fields.
        """
        try:
            return cls(**{**data, "data": DataSettings(**data["data"])})
        except (TypeError, KeyError) as error:
            raise RunFolderError(
                f"the run config does not match this flowkit version ({error}); "
                "start a new run with this version"
            ) from error


class RunMode(Choice):
    """What to do with the run folder: create it, continue it, or replace it."""

    NEW = "new"
    RESUME = "resume"
    OVERWRITE = "overwrite"


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder (see the module docstring for the layout).

    Attributes:
        root: the run folder.
    """

    root: Path

    @property
    def config(self) -> Path:
        """``config.json``: the :class:`RunConfig`."""
        return self.root / "config.json"

    @property
    def history(self) -> Path:
        """``history.json``: one record per finished epoch."""
        return self.root / "history.json"

    @property
    def log(self) -> Path:
        """``train.log``: a human-readable line per epoch and stage."""
        return self.root / "train.log"

    @property
    def metrics(self) -> Path:
        """``metrics.json``: the test metrics of the final model."""
        return self.root / "metrics.json"

    @property
    def threshold(self) -> Path:
        """``threshold.json``: the anomaly thresholds ``flowkit predict`` applies."""
        return self.root / "threshold.json"

    @property
    def checkpoints(self) -> Path:
        """The checkpoint folder."""
        return self.root / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        """Written after every epoch: where ``--resume`` continues from."""
        return self.checkpoints / "last.pt"

    @property
    def final_checkpoint(self) -> Path:
        """The reported model, after the last epoch and ``fit_normal``."""
        return self.checkpoints / "final.pt"

    @property
    def heatmaps(self) -> Path:
        """Heat-map overlays of test images."""
        return self.root / "heatmaps"

    @property
    def curves(self) -> Path:
        """ROC and PRO curve plots."""
        return self.root / "curves"

    @classmethod
    def check(cls, root: str | Path, mode: RunMode | str) -> RunFolder:
        """Check, without touching anything, that ``root`` may be used in ``mode``.

        Args:
            root: the run folder.
            mode: ``new`` (the folder must not exist), ``resume`` (it must hold a run) or
                ``overwrite`` (it must be a run folder, an empty folder, or absent).

        Raises:
            RunFolderError: the folder exists in ``new`` mode, holds no run in ``resume``
                mode, or is a non-empty folder that is not a run in ``overwrite`` mode.
        """
        run, mode = cls(Path(root)), RunMode(mode)
        exists = run.root.exists()
        if mode is RunMode.NEW and exists:
            raise RunFolderError(
                f"the run folder {run.root} exists; pass --resume to continue it, --overwrite "
                "to replace it, or choose another --out"
            )
        if mode is RunMode.RESUME and not run.config.is_file():
            raise RunFolderError(
                f"nothing to resume: {run.config} does not exist; drop --resume to start the run"
            )
        if mode is RunMode.OVERWRITE and exists and (
            not run.root.is_dir() or (any(run.root.iterdir()) and not run.config.is_file())
        ):
            raise RunFolderError(
                f"refusing to overwrite {run.root}: it is not a flowkit run folder (no "
                "config.json); choose another --out"
            )
        return run

    @classmethod
    def prepare(cls, root: str | Path, mode: RunMode | str) -> RunFolder:
        """:meth:`check` ``root``, then create its folders.

        ``overwrite`` deletes an existing run first; ``resume`` removes the temporary files
        of atomic writes a killed run left behind. Nothing is written or deleted when the
        check fails.

        Raises:
            RunFolderError: as :meth:`check`.
        """
        run, mode = cls.check(root, mode), RunMode(mode)
        if mode is RunMode.RESUME:
            for stale in (*run.root.glob(_TEMPORARY), *run.checkpoints.glob(_TEMPORARY)):
                stale.unlink()
        if mode is RunMode.OVERWRITE and run.root.exists():
            shutil.rmtree(run.root)
        for folder in (run.root, run.checkpoints, run.heatmaps, run.curves):
            folder.mkdir(parents=True, exist_ok=True)
        return run

    @classmethod
    def open(cls, root: str | Path) -> RunFolder:
        """An existing run folder, for evaluation and prediction (nothing is created).

        Raises:
            RunFolderError: ``root`` is not a run folder.
        """
        run = cls(Path(root))
        if not run.config.is_file():
            raise RunFolderError(
                f"{run.root} is not a flowkit run folder (no config.json); pass the --out "
                "folder of a `flowkit train` run"
            )
        return run

    def discard_if_untrained(self) -> None:
        """Delete a run folder this command created if it holds no checkpoint yet.

        After a new run fails before its first checkpoint, nothing of it is left, and the same
        command can simply be run again.
        """
        if not any(self.checkpoints.glob("*.pt")):
            shutil.rmtree(self.root, ignore_errors=True)

    def read_config(self) -> RunConfig:
        """The run's :class:`RunConfig`."""
        return RunConfig.from_json(read_json(self.config))

    def append_log(self, line: str) -> None:
        """Add a line to ``train.log``."""
        with self.log.open("a") as handle:
            handle.write(line.rstrip("\n") + "\n")
