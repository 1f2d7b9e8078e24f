"""Every error's advice works: each test makes a command fail, checks the one ``error:`` line
names the fix, then follows the advice (the flag or command it names, or the file change it
asks for) and checks that the command now gets further."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

from flowkit.models.base import build_model
from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.data import read_image, write_synthetic
from flowkit.models.engine.checkpoint import save_checkpoint

from ..threads import one_thread
from ..tiny_model import TINY, TINY_MODULE, TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = ["train", "--model", TINY, "--image-size", "32", "--epochs", "1", "--quiet"]
PYRAMIDFLOW = ["train", "--model", "pyramidflow", "--image-size", "32", "--levels", "2",
               "--channels", "3", "--num-stack", "1", "--epochs", "1", "--quiet"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _fails_then_works(capsys: pytest.CaptureFixture[str], argv: list[str], advice: str,
                      advised: list[str], fix: Callable[[], object] | None = None) -> str:
    """``argv`` fails with one line matching ``advice``; after ``fix`` (the file change the
    advice asks for, if any) ``advised`` succeeds. Returns the error line."""
    assert main(argv) == EXIT_ERROR
    line = _error_line(capsys)
    assert re.search(advice, line), line
    if fix is not None:
        fix()
    assert main(advised) == 0, capsys.readouterr().err
    capsys.readouterr()
    return line


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MVTec-layout category ``nut`` (32 px)."""
    return write_synthetic(tmp_path_factory.mktemp("data"), ["nut"], image_size=32,
                           num_train=4, num_test_good=1, num_test_per_defect=1)


@pytest.fixture
def my_data(data: Path, tmp_path: Path) -> Path:
    """A copy of ``data`` this test may spoil."""
    return Path(shutil.copytree(data, tmp_path / "data"))


def _mvtec(root: Path) -> list[str]:
    return ["--data", "mvtec", "--data-root", str(root), "--category", "nut"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the tiny model with two levels (sides must be even)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    with one_thread():
        assert main([*SMALL, "--levels", "2", "--out", str(run)]) == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run this test may spoil."""
    return Path(shutil.copytree(trained, tmp_path / "run"))


# ---------------------------------------------------------------- run folders


def test_an_existing_run(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_then_works(capsys, [*SMALL, "--out", str(run)], "pass --resume to continue it, "
                      "--overwrite to replace it", [*SMALL, "--out", str(run), "--overwrite"])


def test_an_existing_empty_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run").mkdir()
    out = str(tmp_path / "run")
    _fails_then_works(capsys, [*SMALL, "--out", out], "it is empty: pass --overwrite",
                      [*SMALL, "--out", out, "--overwrite"])


def test_nothing_to_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "run")
    _fails_then_works(capsys, [*SMALL, "--out", out, "--resume"], "drop --resume",
                      [*SMALL, "--out", out])


def test_a_damaged_last_checkpoint(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:300])
    config = (run / "config.json").read_bytes()
    line = _fails_then_works(
        capsys, ["train", "--out", str(run), "--resume", "--epochs", "2"],
        "start it anew with --overwrite instead of --resume",
        [*SMALL, "--levels", "2", "--out", str(run), "--overwrite"],
        fix=lambda: (run / "config.json").read_bytes() == config or pytest.fail("rewritten"))
    assert "earlier epoch" not in line


def test_resume_with_changed_settings(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails_then_works(capsys, ["train", "--out", str(run), "--resume", "--lr", "0.5"],
                      "drop those flags, or start anew with --overwrite",
                      ["train", "--out", str(run), "--resume", "--quiet"])


def test_resume_with_fewer_epochs(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    _fails_then_works(capsys, ["train", "--out", str(run), "--resume", "--epochs", "1"],
                      "pass --epochs 2 or more", ["train", "--out", str(run), "--resume",
                                                  "--epochs", "2", "--quiet"])


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("argv", "advice", "advised"),
    [
        (["--category", "marble"], "choose --category from brick, grass", ["--category", "grass"]),
        (["--levels", "3", "--image-size", "34"], "use 32 or 36",
         ["--levels", "3", "--image-size", "32"]),
        (["--channels", "8"], "does not take --channels; .*: drop those flags", []),
        (["--betas", "0.9", "1.5"], r"e\.g\. --betas 0\.9 0\.999", ["--betas", "0.9", "0.999"]),
        (["--preset", "huge"], "its presets: wide", ["--preset", "wide", "--image-size", "32"]),
    ],
    ids=["category", "image size", "flag", "betas", "preset"],
)
def test_settings(argv: list[str], advice: str, advised: list[str], tmp_path: Path,
                  capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*SMALL, *argv, *out], advice, [*SMALL, *advised, *out])


def test_a_model_constructor_error_names_the_flags(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    base = [a for a in PYRAMIDFLOW if a not in ("--channels", "3")]
    line = _fails_then_works(capsys, [*base, "--channels", "2", *out],
                             "cannot build pyramidflow with --channels 2 --levels 2 --num-stack 1: "
                             ".*use at least 3 output channels", [*base, "--channels", "3", *out])
    assert "model flags" not in line


def test_pyramidflow_batch_of_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*PYRAMIDFLOW, "--batch-size", "1", *out],
                      "pass --batch-size 2 or more", [*PYRAMIDFLOW, "--batch-size", "2", *out])


def test_a_batch_larger_than_the_training_set(data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*SMALL, *_mvtec(data), "--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*argv, "--batch-size", "8"], "pass --batch-size 4 or less",
                      [*argv, "--batch-size", "4"])


def test_a_missing_data_root_and_category(data: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*SMALL, "--data", "folder", *out], "needs --data-root DIR",
                      [*SMALL, "--data", "folder", "--data-root", str(data / "nut"), *out])
    out = ["--out", str(tmp_path / "run2")]
    _fails_then_works(capsys, [*SMALL, "--data", "mvtec", "--data-root", str(data), *out],
                      "needs --category NAME", [*SMALL, *_mvtec(data), *out])


def test_no_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --device cuda is valid here")
    out = ["--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*SMALL, "--device", "cuda", *out], "use --device cpu",
                      [*SMALL, "--device", "cpu", *out])


def test_a_diverging_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", str(tmp_path / "run")]
    line = _fails_then_works(capsys, [*SMALL, "--lr", "1e30", *out],
                             r"run the command again with a lower --lr \(now 1e\+30\)",
                             [*SMALL, "--lr", "0.01", *out])
    assert "--resume" not in line


def test_out_of_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    loss = TinyAutoencoder.loss

    def needs_small_batches(self: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
        if images.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return loss(self, images)

    monkeypatch.setattr(TinyAutoencoder, "loss", needs_small_batches)
    out = ["--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*SMALL, *out], r"lower --batch-size \(now 4\)",
                      [*SMALL, "--batch-size", "2", *out])


def test_a_model_module_that_does_not_import(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWKIT_MODEL_MODULES", f"{TINY_MODULE},no_such_module_17")
    assert main([*SMALL, "--out", str(tmp_path / "run")]) == EXIT_ERROR
    assert "fix or unset the variable" in _error_line(capsys)
    monkeypatch.setenv("FLOWKIT_MODEL_MODULES", TINY_MODULE)
    assert main([*SMALL, "--out", str(tmp_path / "run")]) == 0


def test_a_bad_flag_points_to_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as failed:
        main(["train", "--epochs", "x"])
    assert failed.value.code == EXIT_ERROR
    assert _error_line(capsys).endswith("; see flowkit train --help")
    with pytest.raises(SystemExit) as helped:
        main(["train", "--help"])
    assert helped.value.code == 0 and "--epochs" in capsys.readouterr().out


# ---------------------------------------------------------------- data


def test_an_unreadable_image(my_data: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    bad = my_data / "nut" / "test" / "good" / "000.png"
    bad.write_bytes(bad.read_bytes()[:50])
    argv = [*SMALL, *_mvtec(my_data), "--batch-size", "2", "--out", str(tmp_path / "run")]
    _fails_then_works(capsys, argv, "replace or remove it", argv,
                      fix=lambda: shutil.copy(my_data / "nut" / "train" / "good" / "000.png", bad))


def test_a_test_split_without_defects(my_data: Path, data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    for folder in ("test/missing", "test/scratch", "test/stain", "ground_truth"):
        shutil.rmtree(my_data / "nut" / folder)

    def add_defects() -> None:  # what the advice says: test/<defect>/ and its masks
        for folder in ("test/stain", "ground_truth/stain"):
            shutil.copytree(data / "nut" / folder, my_data / "nut" / folder)

    argv = [*SMALL, *_mvtec(my_data), "--batch-size", "2", "--out", str(tmp_path / "run")]
    _fails_then_works(capsys, argv, r"add defective images as test/<defect>/\*\.png with masks "
                      r"ground_truth/<defect>/<name>_mask\.png", argv, fix=add_defects)


def test_jpg_files_in_the_mvtec_layout(my_data: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    for png in (my_data / "nut" / "train" / "good").glob("*.png"):
        skio.imsave(png.with_suffix(".jpg"), (read_image(png) * 255).astype(np.uint8),
                    check_contrast=False)
        png.unlink()
    rest = ["--data-root", str(my_data), "--category", "nut", "--batch-size", "2",
            "--out", str(tmp_path / "run")]
    _fails_then_works(capsys, [*SMALL, "--data", "mvtec", *rest], "pass --data folder",
                      [*SMALL, "--data", "folder", *rest])


# ---------------------------------------------------------------- eval and predict


def _another_models_checkpoint(path: Path) -> None:
    save_checkpoint(path, build_model("baseline", levels=1, image_size=32), None, 0, 0, {})


@pytest.mark.parametrize(
    "spoil",
    [_another_models_checkpoint, lambda path: path.write_bytes(path.read_bytes()[:1000]),
     lambda path: path.write_bytes(np.random.default_rng(0).bytes(5000)), Path.unlink],
    ids=["another model", "truncated", "random bytes", "missing"],
)
def test_a_bad_final_checkpoint(spoil: Callable[[Path], object], run: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    spoil(run / "checkpoints" / "final.pt")
    line = _fails_then_works(capsys, ["eval", str(run)],
                             rf"rebuild it from .*last\.pt with: flowkit train --out {run} "
                             "--resume", ["train", "--out", str(run), "--resume", "--quiet"])
    assert "weights_only" not in line and "--model" not in line
    assert main(["eval", str(run), "--quiet"]) == 0


def test_eval_of_a_folder_that_is_not_a_run(run: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    _fails_then_works(capsys, ["eval", str(tmp_path)], "pass the --out folder of a `flowkit "
                      "train` run", ["eval", str(run), "--quiet"])


def test_eval_after_the_dataset_moved(data: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    copy = Path(shutil.copytree(data, tmp_path / "data"))
    run = str(tmp_path / "run")
    assert main([*SMALL, *_mvtec(copy), "--batch-size", "2", "--out", run]) == 0
    moved = copy.rename(tmp_path / "moved")
    _fails_then_works(capsys, ["eval", run], r"check the path \(--data-root",
                      ["eval", run, "--data-root", str(moved), "--quiet"])


def test_eval_under_torchrun(run: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["eval", str(run)]) == EXIT_ERROR
    assert "start it with python or flowkit, not torchrun" in _error_line(capsys)
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["eval", str(run), "--quiet"]) == 0


def test_predict_advice(run: Path, data: Path, tmp_path: Path,
                        capsys: pytest.CaptureFixture[str]) -> None:
    images = data / "nut" / "test"
    out = ["--out", str(tmp_path / "out")]
    _fails_then_works(capsys, ["predict", str(run), str(images), *out],
                      "pass --recursive", ["predict", str(run), str(images), *out, "--recursive",
                                           "--quiet"])
    _fails_then_works(capsys, ["predict", str(run), str(images / "good"), *out],
                      "pass --overwrite to replace it",
                      ["predict", str(run), str(images / "good"), *out, "--overwrite", "--quiet"])
    _fails_then_works(capsys, ["predict", str(run), str(images / "good"), *out, "--overwrite",
                               "--image-size", "33"], "use 32 or 34",
                      ["predict", str(run), str(images / "good"), *out, "--overwrite",
                       "--image-size", "32", "--quiet"])


def test_data_synth_into_an_existing_folder(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    synth = ["data", "synth", "--out", str(tmp_path / "d"), "--categories", "nut",
             "--image-size", "32", "--num-train", "1", "--num-test-good", "1",
             "--num-test-per-defect", "1", "--quiet"]
    assert main(synth) == 0
    _fails_then_works(capsys, synth, "pass --overwrite to replace it whole",
                      [*synth, "--overwrite"])
