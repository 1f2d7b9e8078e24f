"""Checks before a run: every file, both test classes, the model's constraints and every
setting are checked in seconds, and a failed check writes, deletes and rewrites nothing."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.data import write_synthetic
from flowkit.models.engine.preflight import DataReport, check_optimizer, preflight
from flowkit.models.errors import ConfigError

from ..tiny_model import TINY

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = ["train", "--model", TINY, "--image-size", "32", "--epochs", "1", "--quiet"]


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _dataset(root: Path, size: int = 32, **counts: int) -> Path:
    counts = {"num_train": 4, "num_test_good": 1, "num_test_per_defect": 1, **counts}
    return write_synthetic(root, ["nut"], image_size=size, **counts)


def _mvtec(data: Path) -> list[str]:
    return ["--data", "mvtec", "--data-root", str(data), "--category", "nut"]


@pytest.mark.parametrize("where", ["train/good/002.png", "test/stain/000.png",
                                   "ground_truth/scratch/000_mask.png"])
def test_a_truncated_file_anywhere_stops_the_run_before_it_starts(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "data")
    spoiled = data / "nut" / where
    spoiled.write_bytes(spoiled.read_bytes()[:60])
    before = _files(tmp_path)
    assert main([*SMALL, *_mvtec(data), "--out", str(tmp_path / "run")]) == EXIT_ERROR
    assert re.search(rf"cannot read image .*{re.escape(where)}: .*truncated", _error_line(capsys))
    assert _files(tmp_path) == before


def test_a_test_split_without_defects_is_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _dataset(tmp_path / "data", num_test_per_defect=0)
    assert main([*SMALL, *_mvtec(data), "--out", str(tmp_path / "run")]) == EXIT_ERROR
    line = _error_line(capsys)
    assert "has 1 normal and no defective images" in line and "ROC" not in line
    assert not (tmp_path / "run").exists()


def test_a_mask_of_another_size_is_refused(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data")
    other = _dataset(tmp_path / "other", size=64)
    mask = Path("nut/ground_truth/stain/000_mask.png")
    shutil.copy(other / mask, data / mask)
    assert main([*SMALL, *_mvtec(data), "--out", str(tmp_path / "run")]) == EXIT_ERROR
    assert re.search(r"mask .*000_mask\.png has size \(64, 64\), but its image .* has size "
                     r"\(32, 32\)", _error_line(capsys))


def test_pyramidflow_needs_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--model", "pyramidflow", "--batch-size", "1", "--out", str(tmp_path / "r")]
    assert main(argv) == EXIT_ERROR
    assert _error_line(capsys) == ("error: pyramidflow trains on batches of at least 2 images "
                                   "(its loss needs them), got 1; pass --batch-size 2 or more")
    assert not (tmp_path / "r").exists()


def test_a_failed_resume_changes_nothing(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main([*SMALL, "--out", str(run)]) == 0
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:500])
    (run / "checkpoints" / ".last.pt.x.tmp").write_bytes(b"a killed write")
    before = _files(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--epochs", "3"]) == EXIT_ERROR
    assert "cannot read the checkpoint" in _error_line(capsys)
    assert _files(run) == before


def test_overwrite_keeps_the_old_run_when_a_check_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main([*SMALL, "--out", str(run)]) == 0
    before = _files(run)
    capsys.readouterr()
    argv = [*SMALL, "--out", str(run), "--overwrite", "--data", "folder", "--data-root",
            str(tmp_path / "missing")]
    assert main(argv) == EXIT_ERROR
    assert "does not exist" in _error_line(capsys)
    assert _files(run) == before


@settings(max_examples=30)
@given(beta=st.floats(allow_nan=False).filter(lambda b: not 0 <= b < 1),
       decay=st.floats(max_value=-1e-12, allow_nan=False))
def test_optimizer_settings_adam_would_refuse(beta: float, decay: float) -> None:
    with pytest.raises(ConfigError, match=r"--betas must lie in \[0, 1\)"):
        check_optimizer({"lr": 1e-3, "betas": [0.9, beta]})
    with pytest.raises(ConfigError, match="--weight-decay must be zero or more"):
        check_optimizer({"lr": 1e-3, "weight_decay": decay})
    check_optimizer({"lr": 1e-3, "betas": [0.0, 0.999], "weight_decay": 0.0})


def test_the_resize_note_names_upsampling_and_the_size_that_avoids_it() -> None:
    report = DataReport(sizes={(128, 128): 3, (256, 256): 2})
    assert report.resize_note(256) == (
        "note: resizing the image files (3 of 128x128 px) to 256x256; smaller ones are "
        "upsampled, which adds no detail: pass --image-size 128 or less to train at their size")
    assert report.resize_note(64).startswith("note: resizing the image files (3 of 128x128, "
                                             "2 of 256x256 px) to 64x64")
    assert "upsampled" not in report.resize_note(64)
    assert DataReport(sizes={(64, 64): 5}).resize_note(64) is None


def test_train_prints_the_resize_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data")
    argv = [*SMALL[:-1], *_mvtec(data), "--image-size", "64", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    assert "note: resizing the image files (8 of 32x32 px) to 64x64; smaller ones are " \
           "upsampled" in capsys.readouterr().err


@pytest.mark.parametrize(("category", "size", "noted"),
                         [("brick", 512, True), ("brick", 256, False), ("nut", 512, False),
                          ("fabric", 512, False)])
def test_upsampled_synthetic_textures_are_noted(tiny_config, category: str, size: int,
                                                noted: bool) -> None:
    data = dataclasses.replace(tiny_config.data, category=category, image_size=size)
    note = preflight(dataclasses.replace(tiny_config, data=data)).resize_note(size)
    assert (note is not None) is noted
    if noted:
        assert note == (f"note: the synthetic textures hold 256 px of detail per side; at {size} "
                        "px they are upsampled, which adds no detail: pass --image-size 256 or "
                        "less, or --category nut (drawn at any size)")


def test_an_unknown_augmentation_in_a_config_is_refused(tiny_config) -> None:
    """A hand-edited ``config.json`` cannot reach training with an augmentation that is none."""
    with pytest.raises(ConfigError, match="--augment: unknown augmentation 'sideways'; choose "
                       "one of 'auto', 'on', 'off'"):
        preflight(dataclasses.replace(tiny_config, augment="sideways"))
