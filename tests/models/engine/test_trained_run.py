"""``flowkit.models.load_run``: a finished run's model with its threshold, predicting files or
tensors as ``flowkit predict`` does; the README's example runs."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from flowkit.models import load_run
from flowkit.models.cli import main
from flowkit.models.cli.predict import PREDICTIONS_FILE
from flowkit.models.data import write_synthetic
from flowkit.models.errors import CheckpointError, RunFolderError

from ..threads import one_thread
from ..tiny_model import TINY

pytestmark = pytest.mark.usefixtures("single_thread")

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of the tiny model with two levels."""
    out = tmp_path_factory.mktemp("api") / "run"
    with one_thread():
        assert main(["train", "--model", TINY, "--levels", "2", "--epochs", "1", "--quiet",
                     "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = write_synthetic(tmp_path_factory.mktemp("images"), ["brick"], image_size=48,
                           num_train=0, num_test_good=2, num_test_per_defect=1)
    return sorted((root / "brick" / "test").rglob("*.png"))


def test_files_predict_as_flowkit_predict_does(run: Path, images: list[Path],
                                               tmp_path: Path) -> None:
    loaded = load_run(run)
    result = loaded.predict(images, batch_size=3)
    assert result.maps.shape == (len(images), 1, 32, 32) and result.scores.shape == (6,)
    assert torch.equal(result.anomalous, result.scores > loaded.threshold)
    assert loaded.threshold == json.loads((run / "threshold.json").read_text())["image"]
    assert main(["predict", str(run), str(images[0].parents[1]), "--recursive",
                 "--out", str(tmp_path / "o"), "--quiet"]) == 0
    record = json.loads((tmp_path / "o" / PREDICTIONS_FILE).read_text())["images"]
    assert [r["image"] for r in record] == list(map(str, images))
    torch.testing.assert_close(result.scores, torch.tensor([r["score"] for r in record]))
    assert result.anomalous.tolist() == [r["anomalous"] for r in record]


def test_tensors_predict_as_the_model_does(run: Path) -> None:
    loaded = load_run(run)
    images = torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    result = loaded.predict(images, batch_size=2)
    maps, scores = loaded.model.predict(images)
    torch.testing.assert_close(result.maps, maps)
    torch.testing.assert_close(result.scores, scores)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), TypeError, "of torch.uint8"),
        (torch.zeros(3, 16, 16), ValueError, r"\[B, 3, H, W\], got shape \(3, 16, 16\)"),
        (torch.full((1, 3, 16, 16), 120.0), ValueError, r"values in \[0, 1\]"),
        (torch.zeros(1, 3, 15, 16), ValueError, "not a multiple of 2"),
    ],
)
def test_bad_tensors_are_refused(run: Path, images: torch.Tensor, error: type,
                                 message: str) -> None:
    with pytest.raises(error, match=message):
        load_run(run).predict(images)


def test_what_is_not_a_finished_run(run: Path, tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="not a flowkit run folder"):
        load_run(tmp_path)
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "config.json").write_bytes((run / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="flowkit train --out .* --resume"):
        load_run(copy)


def test_the_readme_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    section = README.read_text().split("### Use it from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 13
    monkeypatch.chdir(tmp_path)
    assert main(["data", "synth", "--out", "data", "--categories", "brick", "--image-size", "32",
                 "--num-train", "8", "--num-test-good", "1", "--num-test-per-defect", "2",
                 "--quiet"]) == 0
    assert main(["train", "--model", "pyramidflow", "--data", "mvtec", "--data-root", "data",
                 "--category", "brick", "--image-size", "32", "--levels", "2", "--channels", "3",
                 "--num-stack", "1", "--epochs", "1", "--quiet"]) == 0
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, str(README), "exec"), {})
    lines = printed.getvalue().splitlines()
    assert lines[0].startswith("pyramidflow 32 ")
    assert [line.split(":")[0] for line in lines[1:]] == ["000.png", "001.png"]
    assert all(re.search(r": \S+ (ANOMALOUS|normal)$", line) for line in lines[1:])
