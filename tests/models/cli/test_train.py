"""The ``flowkit`` command line: train/eval end to end, run folders, and one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowkit import __version__
from flowkit.models.cli import EXIT_ERROR, EXIT_UNEXPECTED, build_parser, main
from flowkit.models.cli import train as train_command
from flowkit.models.cli.settings import resolve_config
from flowkit.models.data import write_synthetic
from flowkit.models.engine.evaluate import METRIC_LABELS

from ..tiny_model import TINY, TINY_MODULE

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[3]
SMALL = ["--model", TINY, "--image-size", "32", "--epochs", "1"]
RUN_FILES = ["best_threshold.json", "checkpoints/best.pt", "checkpoints/final.pt",
             "checkpoints/last.pt", "config.json", "curves/pro.png", "curves/roc.png",
             "history.json", "metrics.json", "threshold.json", "train.log"]


def _flowkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m flowkit ARGS`` in a fresh process that registers the tiny model."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": TINY_MODULE,
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "flowkit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def _small_dataset(root: Path, category: str = "nut") -> Path:
    """A small synthetic category on disk in the MVTec layout."""
    return write_synthetic(root, [category], image_size=32, num_train=8, num_test_good=2,
                           num_test_per_defect=1)


def _quality(run: Path) -> dict[str, float]:
    record = json.loads((run / "metrics.json").read_text())
    return {key: record[key] for key in METRIC_LABELS}


def test_version_and_module_entry_point(tmp_path: Path) -> None:
    result = _flowkit("--version", cwd=tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, f"flowkit {__version__}")


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "train" in capsys.readouterr().out


def test_train_and_eval_end_to_end(tmp_path: Path) -> None:
    """Real processes on a folder dataset: train prints the table, eval reproduces it."""
    data = _small_dataset(tmp_path / "data")
    run = tmp_path / "run"
    trained = _flowkit("train", *SMALL, "--data", "mvtec", "--data-root", str(data),
                       "--category", "nut", "--batch-size", "2", "--out", str(run),
                       cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert "| image AUROC" in trained.stdout and "AUPRO@0.3" in trained.stdout
    assert "Traceback" not in trained.stderr
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith("heatmaps/")] == RUN_FILES
    assert {"heatmaps/good_0000.png", "heatmaps/missing_0002.png"} <= set(files)
    config = json.loads((run / "config.json").read_text())
    assert config["data"] == {"source": "mvtec", "root": str(data.resolve()),
                              "category": "nut", "image_size": 32}
    before = _quality(run)

    evaluated = _flowkit("eval", str(run), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert _quality(run) == before


def test_train_synthetic_defaults_from_the_model(tmp_path: Path) -> None:
    """Unset flags come from the model: image size, epochs, batch, per-category config."""
    run = tmp_path / "run"
    assert main(["train", "--model", TINY, "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["data"]["image_size"], config["epochs"], config["batch_size"]) == (32, 2, 4)
    assert config["model_config"]["hidden"] == 3  # TinyAutoencoder.defaults_for("brick")
    assert config["optimizer"] == {"lr": 0.01, "betas": [0.9, 0.99], "clip_grad_norm": 1.0}


def test_resume_extends_and_refuses_changed_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run), "--quiet"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len(json.loads((run / "history.json").read_text())) == 2
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.5"]) == EXIT_ERROR
    assert "optimizer.lr: 0.01 -> 0.5" in _error_line(capsys)


def test_existing_run_folder_is_refused_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert main(["train", *SMALL, "--out", str(run)]) == EXIT_ERROR
    assert "exists; pass --resume" in _error_line(capsys)
    assert [p.name for p in run.iterdir()] == ["config.json"]
    assert (run / "config.json").read_text() == "{}"


def test_overwrite_refuses_a_folder_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    assert main(["train", *SMALL, "--out", str(folder), "--overwrite"]) == EXIT_ERROR
    assert "not a flowkit run folder" in _error_line(capsys)
    assert (folder / "thesis.tex").read_text() == "years of work"


def _empty_category(tmp_path: Path) -> Path:
    (tmp_path / "data" / "screws").mkdir(parents=True)
    return tmp_path / "data"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--data", "mvtec", "--data-root", "{tmp}/missing", "--category", "x"],
         r"dataset folder .*missing/x does not exist"),
        (["--data", "btad"], r"--data btad needs --data-root DIR"),
        (["--data", "mvtec", "--data-root", "{empty}", "--category", "screws"],
         r"wrong layout in .*screws: expected the folders train/ and test/"),
        (["--levels", "3", "--image-size", "34"],
         r"image height 34 is not a multiple of 4.* use 32 or 36"),
        (["--channels", "8"], r"model 'tiny' does not take --channels"),
        (["--category", "marble"], r"unknown synthetic category 'marble'"),
    ],
)
def test_train_errors_are_one_line_and_write_nothing(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = _empty_category(tmp_path)
    argv = [a.format(tmp=tmp_path, empty=empty) for a in argv]
    run = tmp_path / "run"
    assert main(["train", "--model", TINY, *argv, "--out", str(run)]) == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert not run.exists()


def test_unreadable_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _small_dataset(tmp_path / "data")
    (data / "nut" / "train" / "good" / "003.png").write_bytes(b"\x89PNG truncated")
    argv = ["train", *SMALL, "--data", "mvtec", "--data-root", str(data), "--category", "nut",
            "--out", str(tmp_path / "run")]
    assert main(argv) == EXIT_ERROR
    assert "cannot read image" in _error_line(capsys)


def test_cuda_requested_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --device cuda is valid here")
    assert main(["train", *SMALL, "--device", "cuda", "--out", str(tmp_path / "r")]) == 2
    assert "no CUDA device is available; use --device cpu" in _error_line(capsys)


def test_eval_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path)]) == EXIT_ERROR
    assert "not a flowkit run folder" in _error_line(capsys)
    run = tmp_path / "run"
    assert main(["train", *SMALL, "--out", str(run), "--quiet"]) == 0
    capsys.readouterr()
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[:1000])
    assert main(["eval", str(run)]) == EXIT_ERROR
    assert "truncated or corrupt" in _error_line(capsys)


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--model", TINY, "--data", "folder", "--data-root", str(tmp_path / "no"),
            "--out", str(tmp_path / "run"), "--debug"]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: dataset")


def test_a_bug_exits_with_1(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(train_command, "train", broken)
    assert main(["train", *SMALL, "--out", str(tmp_path / "run")]) == EXIT_UNEXPECTED
    assert "unexpected RuntimeError: boom (a bug" in _error_line(capsys)


def test_memory_saving_is_a_boolean_optional_flag() -> None:
    parser = build_parser()
    parse = parser.parse_args
    assert parse(["train"]).memory_saving is None
    assert parse(["train", "--memory-saving"]).memory_saving is True
    assert parse(["train", "--no-memory-saving"]).memory_saving is False


def test_flags_override_model_defaults() -> None:
    args = build_parser().parse_args(["train", "--model", TINY, "--category", "nut",
                                      "--image-size", "64", "--lr", "0.001",
                                      "--clip-grad-norm", "0"])
    config = resolve_config(args)
    assert config.model_config["hidden"] == 2  # no per-category default for nut
    assert config.data.image_size == 64
    assert config.optimizer == {"lr": 0.001, "betas": [0.9, 0.99], "clip_grad_norm": None}
