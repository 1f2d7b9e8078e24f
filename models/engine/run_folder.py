"""A run folder on disk: its layout, and what may be done with it (create, resume, replace).

A run folder holds everything a run produces::

    runs/<name>/
        config.json          the full RunConfig (model config, data settings, optimization)
        history.json         per-epoch mean loss, steps and seconds; with validation, the
                             epoch's validation metrics (see :mod:`.validation`)
        train.log            one line per epoch and per stage
        metrics.json         test metrics of the final model, with timing; under "best",
                             those of the best-on-validation model, its epoch and scores
        threshold.json       anomaly thresholds from the normal training images (predict)
        best_threshold.json  the same for the best-on-validation model
        checkpoints/last.pt  written after every epoch, and on SIGINT/SIGTERM (resume point)
        checkpoints/final.pt the reported model: after the last epoch and ``fit_normal``
        checkpoints/best.pt  with validation: the epoch scoring best on the held-out training
                             images with pasted defects, fitted like final.pt
        heatmaps/*.png       image | ground truth | anomaly map, for a few test images
        curves/roc.png, curves/pro.png

Every file is written atomically (see :mod:`.files`), so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..data import Choice
from ..errors import RunFolderError
from .config import RunConfig
from .files import TEMPORARY_GLOB, read_json

__all__ = ["RunFolder", "RunMode", "Trained"]


class RunMode(Choice):
    """What to do with the run folder: create it, continue it, or replace it."""

    NEW = "new"
    RESUME = "resume"
    OVERWRITE = "overwrite"


class Trained(Choice):
    """Which fitted model of a run: the last epoch's, or the best epoch on validation."""

    FINAL = "final"
    BEST = "best"


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
    def best_threshold(self) -> Path:
        """``best_threshold.json``: the thresholds of the best-on-validation model."""
        return self.root / "best_threshold.json"

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
    def best_checkpoint(self) -> Path:
        """The best epoch on the validation images, fitted (runs with validation only)."""
        return self.checkpoints / "best.pt"

    def trained(self, which: Trained | str) -> tuple[Path, Path, str]:
        """The checkpoint and the threshold file of the final or the best model, and what to
        do when the checkpoint is missing or damaged."""
        if Trained(which) is Trained.BEST:
            return self.best_checkpoint, self.best_threshold, (
                "best.pt exists only for runs trained with --val-fraction above 0 and at least "
                "one epoch; use the final model (--checkpoint final)")
        return self.final_checkpoint, self.threshold, self.rebuild_advice

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
        is_run = run.config.is_file()
        empty = run.root.is_dir() and not any(run.root.iterdir())
        if mode is RunMode.NEW and exists:
            advice = ("pass --resume to continue it, --overwrite to replace it, or choose "
                      "another --out") if is_run else \
                "it is empty: pass --overwrite to use it" if empty else \
                "it is not a flowkit run folder: choose another --out"
            raise RunFolderError(f"the run folder {run.root} exists; {advice}")
        if mode is RunMode.RESUME and not is_run:
            advice = "drop --resume to start the run" if not exists else \
                "pass --overwrite instead of --resume to start a run in it" if empty else \
                "it is not a flowkit run folder: choose another --out"
            raise RunFolderError(f"nothing to resume: {run.config} does not exist; {advice}")
        if mode is RunMode.OVERWRITE and exists and not (is_run or empty):
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
            for stale in (*run.root.glob(TEMPORARY_GLOB), *run.checkpoints.glob(TEMPORARY_GLOB)):
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

    @property
    def rebuild_advice(self) -> str:
        """How to rewrite ``final.pt``: resuming a finished run fits and saves the final model
        again from ``last.pt`` (an unfinished one trains on first)."""
        return (f"rebuild it from {self.last_checkpoint} with: flowkit train --out {self.root} "
                "--resume")

    def read_config(self) -> RunConfig:
        """The run's :class:`RunConfig`."""
        return RunConfig.from_json(read_json(self.config))

    def append_log(self, line: str) -> None:
        """Add a line to ``train.log``."""
        with self.log.open("a") as handle:
            handle.write(line.rstrip("\n") + "\n")
