"""``flowkit data synth``: the MVTec layout on disk, written whole or not at all, and an
existing folder replaced only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.cli.data import MARKER_FILE
from flowkit.models.data import FolderDataset

SYNTH = ["data", "synth", "--categories", "grass", "--image-size", "32", "--num-test-good", "1",
         "--num-test-per-defect", "1", "--quiet"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _images(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.png"))


def test_data_synth_writes_the_mvtec_layout(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    assert main([*SYNTH, "--out", str(out), "--num-train", "2"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["grass", MARKER_FILE]
    assert sorted(p.name for p in (out / "grass").iterdir()) == ["ground_truth", "test", "train"]
    test = FolderDataset(out, "grass", "test", image_size=None)
    assert len(test) == 5 and test[0].image.shape == (3, 32, 32)


def test_data_synth_rejects_tiny_images(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--out", str(tmp_path), "--image-size", "8"]) == EXIT_ERROR
    assert "at least 32" in _error_line(capsys)


def test_an_existing_folder_is_replaced_whole_only_with_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "synthetic"
    assert main([*SYNTH, "--out", str(out), "--num-train", "4"]) == 0
    before = _images(out)
    assert main([*SYNTH, "--out", str(out), "--num-train", "2"]) == EXIT_ERROR
    assert _error_line(capsys) == (f"error: the folder {out} exists; pass --overwrite to replace "
                                   "it whole, or choose another --out")
    assert _images(out) == before
    assert main([*SYNTH, "--out", str(out), "--num-train", "2", "--overwrite"]) == 0
    after = _images(out)
    assert [p for p in after if "train" in p] == ["grass/train/good/000.png",
                                                  "grass/train/good/001.png"]
    assert set(after) < set(before)  # the old images are gone, not mixed in
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind


def test_overwrite_never_replaces_a_folder_of_something_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "thesis.tex").write_text("years of work")
    assert main([*SYNTH, "--out", str(tmp_path), "--overwrite"]) == EXIT_ERROR
    assert "does not hold a dataset of flowkit data synth" in _error_line(capsys)
    assert (tmp_path / "thesis.tex").read_text() == "years of work"
