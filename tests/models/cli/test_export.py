"""``flowkit export``: a real subprocess writes a program ONNX Runtime runs with flowkit's maps;
wrong runs, formats and missing packages get one line and exit 2."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.engine.checkpoint import load_model
from flowkit.models.engine.export import EXPORT_INSTALL, TOLERANCE

from ..engine.test_export import tiny_run  # noqa: F401 (a fixture)
from ..tiny_model import TINY_MODULE

pytestmark = pytest.mark.usefixtures("single_thread")

REPO = Path(__file__).resolve().parents[3]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed command printed on stderr."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_export_in_a_subprocess_writes_a_program_onnx_runtime_runs(
    tiny_run,  # noqa: F811 (the fixture)
    tmp_path,
) -> None:
    import onnxruntime

    out = tmp_path / "tiny.onnx"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": TINY_MODULE,
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "flowkit", "export", str(tiny_run.root), "--format", "onnx",
         "--out", str(out)], env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out) and result.stderr == ""
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, 32, 32)
    maps, scores = load_model(tiny_run.final_checkpoint).predict(images)
    got_maps, got_scores = session.run(None, {"images": images.numpy()})
    for want, got in ((maps, got_maps), (scores, got_scores)):
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=0,
                                   atol=TOLERANCE * float(want.abs().max()))


def test_export_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys) -> None:
    assert main(["export", str(tmp_path), "--format", "exported"]) == EXIT_ERROR
    assert "is not a flowkit run folder (no config.json)" in _error_line(capsys)


def test_an_unknown_format_is_one_line(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["export", str(tmp_path), "--format", "tflite"])
    assert stopped.value.code == EXIT_ERROR
    assert "invalid choice: 'tflite'" in _error_line(capsys)


def test_a_missing_onnx_runtime_is_one_line_naming_the_extra(
    tiny_run,  # noqa: F811 (the fixture)
    tmp_path,
    capsys,
    monkeypatch,
) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_run.root), "--format", "onnx", "--out", str(out)]) == EXIT_ERROR
    assert re.search(rf"onnxruntime, which are not installed; .*{re.escape(EXPORT_INSTALL)}$",
                     _error_line(capsys))
    assert not out.exists()
