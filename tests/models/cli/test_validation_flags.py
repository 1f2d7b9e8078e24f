"""``--val-fraction``/``--select-by`` from the command line, and the best-on-validation model
through ``train``, ``eval`` and ``predict``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowkit.models.cli import EXIT_ERROR, build_parser, main
from flowkit.models.cli.settings import resolve_config
from flowkit.models.data import write_synthetic
from flowkit.models.engine.checkpoint import load_checkpoint
from flowkit.models.engine.evaluate import METRIC_LABELS
from flowkit.models.engine.run_folder import RunFolder
from flowkit.models.engine.trained_run import load_run

from ..tiny_model import TINY

pytestmark = pytest.mark.usefixtures("single_thread")

TRAIN = ["train", "--model", TINY, "--image-size", "32", "--epochs", "2", "--quiet"]


def _config(*argv: str):
    return resolve_config(build_parser().parse_args(["train", "--model", TINY, *argv]))


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_defaults_flags_and_resume(tmp_path: Path) -> None:
    config = _config()
    assert (config.val_fraction, config.select_by) == (0.1, "aupro_0.3")
    given = _config("--val-fraction", "0.25", "--select-by", "pixel_auroc")
    assert (given.val_fraction, given.select_by) == (0.25, "pixel_auroc")
    assert _config("--val-fraction", "0").val_fraction == 0.0
    # Too few images to spare 4 and a batch: the default turns validation off.
    data = write_synthetic(tmp_path / "data", ["nut"], image_size=32, num_train=6,
                           num_test_good=1, num_test_per_defect=1)
    small = _config("--data", "mvtec", "--data-root", str(data), "--category", "nut",
                    "--batch-size", "4")
    assert small.val_fraction == 0.0
    # Resuming keeps the run's setting (also an old run's 0), and refuses another.
    assert resolve_config(build_parser().parse_args(["train"]), base=small).val_fraction == 0.0
    with pytest.raises(ValueError, match=r"val_fraction: 0.0 -> 0.2"):
        resolve_config(build_parser().parse_args(["train", "--val-fraction", "0.2"]),
                       base=small)


def test_val_every_defaults_to_at_most_ten_validations_and_resume_keeps_it() -> None:
    assert [_config("--epochs", str(n)).val_every for n in (1, 10, 11, 30)] == [1, 1, 2, 3]
    assert _config("--epochs", "30", "--val-every", "1").val_every == 1
    run = _config("--epochs", "30")
    resumed = resolve_config(build_parser().parse_args(["train", "--epochs", "60"]), base=run)
    assert resumed.val_every == 3  # the run's, not recomputed from the new epochs
    with pytest.raises(ValueError, match=r"val_every: 3 -> 5"):
        resolve_config(build_parser().parse_args(["train", "--val-every", "5"]), base=run)


@pytest.mark.parametrize(("argv", "message"), [
    (["--val-fraction", "1.5"], r"argument --val-fraction: must lie in \[0, 1\), got 1.5"),
    (["--select-by", "loss"], r"argument --select-by: invalid choice: 'loss'"),
    (["--val-every", "0"], r"argument --val-every: "),
    (["--val-fraction", "0.5", "--batch-size", "30"],
     r"holds out 24 of the 48 training images, leaving 24, fewer than one batch of 30: pass "
     r"--val-fraction 0.375 or less"),
])
def test_bad_validation_flags_stop_before_anything_is_written(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    try:
        code = main([*TRAIN, *argv, "--out", str(out)])
    except SystemExit as exited:  # argparse's own errors
        code = exited.code
    assert code == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert not out.exists()


def test_a_model_without_training_refuses_a_fraction(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = ["train", "--model", "baseline", "--category", "nut", "--image-size", "32",
            "--out", str(out), "--quiet"]
    assert main([*argv, "--val-fraction", "0.2"]) == EXIT_ERROR
    assert "is fitted without gradient steps: there is no epoch to choose; drop " \
           "--val-fraction" in _error_line(capsys)
    assert main(argv) == 0  # by default: no validation, no best model
    assert "best" not in json.loads((out / "metrics.json").read_text())
    assert not (out / "checkpoints" / "best.pt").exists()


def test_train_eval_and_predict_the_best_model(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    trained = capsys.readouterr().out
    assert trained.count("| image AUROC") == 2 and ", best on validation: epoch " in trained
    run = RunFolder(out)
    record = json.loads(run.metrics.read_text())
    best = record["best"]
    history = json.loads(run.history.read_text())
    scores = [r["validation"]["aupro_0.3"] for r in history]
    assert best["epoch"] == scores.index(max(scores)) + 1
    assert best["validation"]["aupro_0.3"] == max(scores) and best["selected_by"] == "aupro_0.3"
    assert best["checkpoint"] == "checkpoints/best.pt" and set(METRIC_LABELS) <= best.keys()
    assert load_checkpoint(run.best_checkpoint)["epoch"] == best["epoch"]

    assert main(["eval", str(out), "--quiet"]) == 0
    assert capsys.readouterr().out.count("| image AUROC") == 2
    again = json.loads(run.metrics.read_text())
    assert {k: again["best"][k] for k in METRIC_LABELS} == {k: best[k] for k in METRIC_LABELS}

    images = tmp_path / "heat"
    images.mkdir()
    (images / "a.png").write_bytes(next(run.heatmaps.glob("*.png")).read_bytes())
    for which in ("final", "best"):
        folder = tmp_path / f"predicted-{which}"
        assert main(["predict", str(out), str(images), "--out", str(folder), "--checkpoint",
                     which, "--quiet"]) == 0
        written = json.loads((folder / "predictions.json").read_text())
        checkpoint, thresholds, _ = run.trained(which)
        assert written["checkpoint"] == str(checkpoint)
        assert written["threshold"]["image"] == \
            json.loads(thresholds.read_text())["image"]
        loaded = load_run(out, checkpoint=which)  # the same from Python
        assert loaded.threshold == written["threshold"]["image"]
        assert loaded.predict([str(images / "a.png")]).scores.item() == pytest.approx(
            written["images"][0]["score"], rel=1e-6)


def test_predict_best_of_a_run_without_validation(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main([*TRAIN, "--val-fraction", "0", "--out", str(out)]) == 0
    capsys.readouterr()
    image = next((out / "heatmaps").glob("*.png"))
    assert main(["predict", str(out), str(image), "--out", str(tmp_path / "p"),
                 "--checkpoint", "best"]) == EXIT_ERROR
    assert "trained with --val-fraction above 0 and at least one epoch; use the final model " \
           "(--checkpoint final)" in _error_line(capsys)


def test_the_split_error_advice_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    argv = [*TRAIN, "--batch-size", "30", "--out", str(out)]
    assert main([*argv, "--val-fraction", "0.5"]) == EXIT_ERROR
    advised = re.search(r"pass --val-fraction ([0-9.]+) or less", _error_line(capsys)).group(1)
    assert main([*argv, "--val-fraction", advised, "--epochs", "1"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history[0]["steps"] == 1 and "validation" in history[0]  # 30 of 48 train: 1 batch
