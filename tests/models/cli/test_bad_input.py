"""Bad input to the command line: each case exits with 2 and one ``error:`` line naming the
problem and the fix, and a failed command writes and overwrites nothing.

The other rows of the table are tested where their code lives: missing folders, wrong
layouts, unsplittable image sizes, existing run folders, a truncated checkpoint and an
unreadable training image in ``test_train.py``; every checkpoint case in
``test_checkpoint.py``; grayscale and RGBA images in ``data/`` and ``test_predict.py``; the
prediction inputs in ``test_predict.py``; NaN losses in the loop in ``test_train.py``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from flowkit.models import pyramidflow
from flowkit.models.base import build_model
from flowkit.models.cli import EXIT_ERROR, EXIT_UNEXPECTED, build_parser, main
from flowkit.models.cli.settings import resolve_config
from flowkit.models.data import write_png, write_synthetic
from flowkit.models.engine.checkpoint import CHECKPOINT_FORMAT_VERSION, save_checkpoint
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.training import TrainOptions, train

from ..threads import one_thread
from ..tiny_model import TINY, TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = ["train", "--model", TINY, "--image-size", "32", "--epochs", "2", "--quiet"]
STEPS_PER_EPOCH = 12
CUDA_OOM = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: "
                       "can't allocate memory: you tried to allocate 21474836480 bytes.")


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _fail_at(monkeypatch: pytest.MonkeyPatch, method: str, call: int,
             result: BaseException | float) -> None:
    """On its ``call``-th call, make a method of the tiny model raise ``result`` (an
    exception) or return its output times ``result`` (a number)."""
    original = getattr(TinyAutoencoder, method)
    calls = {"count": 0}

    def patched(self: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
        calls["count"] += 1
        if calls["count"] != call:
            return original(self, images)
        if isinstance(result, BaseException):
            raise result
        return original(self, images) * result

    monkeypatch.setattr(TinyAutoencoder, method, patched)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> RunFolder:
    """A finished one-epoch run of the tiny model (no evaluation)."""
    config = resolve_config(build_parser().parse_args([*TRAIN, "--epochs", "1"]))
    run = RunFolder.prepare(tmp_path_factory.mktemp("bad") / "run", RunMode.NEW)
    with one_thread():
        train(config, run, TrainOptions(torch.device("cpu"), progress=False, quiet=True))
    return run


@pytest.fixture
def run_copy(trained: RunFolder, tmp_path: Path) -> RunFolder:
    """A copy of the trained run this test may spoil."""
    shutil.copytree(trained.root, tmp_path / "run")
    return RunFolder(tmp_path / "run")


def _dataset(root: Path, spoil: str) -> Path:
    """A small MVTec-layout category ``nut`` under ``root``, spoiled as asked."""
    write_synthetic(root, ["nut"], image_size=32, num_train=8, num_test_good=2,
                    num_test_per_defect=1)
    good = root / "nut" / "train" / "good"
    if spoil == "empty":
        for image in good.iterdir():
            image.unlink()
    elif spoil == "not an image":
        (good / "003.png").write_text("a note saved with the wrong name")
    return root


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ("empty", r"no images in .*train/good: expected files ending in \.png, the folder is "
                  r"empty"),
        ("not an image", r"cannot read image .*003\.png: .*not an image"),
    ],
)
def test_bad_dataset(spoil: str, message: str, tmp_path: Path,
                     capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "data", spoil)
    before = _files(tmp_path)
    argv = [*TRAIN, "--data", "mvtec", "--data-root", str(data), "--category", "nut",
            "--batch-size", "2", "--out", str(tmp_path / "run")]
    assert main(argv) == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert _files(tmp_path) == before  # the run folder was not left behind


@pytest.mark.parametrize(
    ("value", "call", "message", "kept"),
    [
        (float("nan"), 3, r"loss became nan at step 3 \(epoch 1\); no checkpoint was written "
                          r"yet", False),
        (float("inf"), STEPS_PER_EPOCH + 4, r"loss became inf at step 16 \(epoch 2\); the last "
                                            r"good checkpoint is .*last\.pt \(epoch 1\)", True),
    ],
)
def test_non_finite_loss(value: float, call: int, message: str, kept: bool, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch,
                         capsys: pytest.CaptureFixture[str]) -> None:
    _fail_at(monkeypatch, "loss", call, value)
    run = RunFolder(tmp_path / "run")
    assert main([*TRAIN, "--out", str(run.root)]) == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert run.last_checkpoint.is_file() is kept
    assert run.root.exists() is kept  # a run without a checkpoint is not left behind
    assert not run.final_checkpoint.exists()


@pytest.mark.parametrize("error", [CUDA_OOM, CPU_OOM], ids=["cuda", "cpu"])
def test_out_of_memory_while_training(error: BaseException, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    _fail_at(monkeypatch, "loss", 1, error)
    assert main([*TRAIN, "--out", str(tmp_path / "run")]) == EXIT_ERROR
    line = _error_line(capsys)
    assert line.startswith("error: out of memory while training (")
    assert line.endswith("lower --batch-size (now 4) or a smaller --image-size (now 32), "
                         "in a new run")
    assert list(tmp_path.iterdir()) == []


def test_out_of_memory_advice_names_memory_saving_when_the_model_has_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def out_of_memory(self: object, images: torch.Tensor) -> torch.Tensor:
        raise CUDA_OOM

    monkeypatch.setattr(pyramidflow.PyramidFlow, "loss", out_of_memory)
    argv = ["train", "--model", "pyramidflow", "--image-size", "32", "--levels", "2",
            "--channels", "3", "--num-stack", "1", "--out", str(tmp_path / "run")]
    assert main(argv) == EXIT_ERROR
    assert "lower --batch-size (now 2), --memory-saving or a smaller --image-size" \
        in _error_line(capsys)


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_out_of_memory_while_evaluating_or_predicting(
    command: str, run_copy: RunFolder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images = write_synthetic(tmp_path / "images", ["brick"], image_size=32, num_train=2,
                             num_test_good=0, num_test_per_defect=0)
    _fail_at(monkeypatch, "anomaly_map", 1, CUDA_OOM)
    before = _files(tmp_path)
    extra = [str(images / "brick" / "train" / "good"), "--out", str(tmp_path / "out")] \
        if command == "predict" else []
    assert main([command, str(run_copy.root), *extra, "--batch-size", "3"]) == EXIT_ERROR
    assert re.search(r"out of memory while (evaluating|predicting) \(CUDA out of memory.*\); "
                     r"lower --batch-size \(now 3\)$", _error_line(capsys))
    assert _files(tmp_path) == before


def test_another_error_stays_a_bug(run_copy: RunFolder, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    _fail_at(monkeypatch, "anomaly_map", 1, RuntimeError("shapes do not match"))
    assert main(["eval", str(run_copy.root)]) == EXIT_UNEXPECTED
    assert "unexpected RuntimeError: shapes do not match (a bug" in _error_line(capsys)


def _another_models_checkpoint(path: Path) -> None:
    save_checkpoint(path, build_model("baseline", levels=1, image_size=32), None, 0, 0, {})


def _newer_checkpoint(path: Path) -> None:
    checkpoint = torch.load(path, weights_only=True)
    torch.save({**checkpoint, "format_version": CHECKPOINT_FORMAT_VERSION + 1}, path)


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (_another_models_checkpoint, r"final\.pt is a checkpoint of the model 'baseline', not "
                                     r"'tiny'"),
        (_newer_checkpoint, r"final\.pt has checkpoint format \d+, .*: upgrade flowkit"),
        (lambda path: path.write_bytes(path.read_bytes()[::-1]),
         r"final\.pt is not a flowkit checkpoint: .*or is corrupt"),
        (lambda path: path.unlink(), r"no checkpoint at .*final\.pt"),
    ],
    ids=["another model", "newer format", "corrupt", "missing"],
)
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_bad_final_checkpoint(command: str, spoil: Callable[[Path], object], message: str,
                              run_copy: RunFolder,
                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spoil(run_copy.final_checkpoint)
    write_png(tmp_path / "images" / "image.png", np.zeros((8, 8, 3), np.uint8))
    before = _files(tmp_path)
    extra = [str(tmp_path / "images"), "--out", str(tmp_path / "out")] \
        if command == "predict" else []
    assert main([command, str(run_copy.root), *extra]) == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert _files(tmp_path) == before
