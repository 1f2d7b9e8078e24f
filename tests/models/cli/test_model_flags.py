"""Every model option on the command line: one flag per constructor keyword of every
registered model, reaching the model's config (PyramidFlow's ResNet-18 encoder included)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
import torch

from flowkit.models.base import MODELS
from flowkit.models.cli import EXIT_ERROR, build_parser, main
from flowkit.models.cli.model_flags import DATA_KEYS, model_config_keys

from ..pyramidflow.test_encoder import torchvision_like_state_dict

pytestmark = pytest.mark.usefixtures("single_thread")

PYRAMIDFLOW = ["train", "--model", "pyramidflow", "--image-size", "32", "--levels", "2",
               "--num-stack", "1", "--kernel-size", "3", "--epochs", "1", "--quiet"]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _keywords() -> list[tuple[str, str, object]]:
    return [(name, key, parameter.default)
            for name in sorted(MODELS)
            for key, parameter in inspect.signature(MODELS[name]).parameters.items()
            if key not in DATA_KEYS]


@pytest.mark.parametrize(("name", "key", "default"), _keywords(),
                         ids=[f"{n}.{k}" for n, k, _ in _keywords()])
def test_every_constructor_keyword_is_a_flag(name: str, key: str, default: object) -> None:
    assert key in model_config_keys()
    flag = "--" + key.replace("_", "-")
    if isinstance(default, bool):
        argv = [flag if not default else f"--no-{key.replace('_', '-')}"]
        expected = not default
    else:
        value = "x.pth" if default is None else str(default)
        argv, expected = [flag, value], type(default)(value) if default is not None else value
    args = build_parser({"train"}).parse_args(["train", "--model", name, *argv])
    assert getattr(args, key) == expected


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18.pth"
    torch.save(torchvision_like_state_dict(), path)
    return path


def test_the_resnet18_encoder_from_the_command_line(weights: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(weights.parent)
    run = tmp_path / "run"
    argv = [*PYRAMIDFLOW, "--encoder", "resnet18", "--out", str(run)]
    assert main(argv) == EXIT_ERROR
    assert "--encoder resnet18 needs --encoder-weights PATH" in _error_line(capsys)
    assert main([*argv, "--encoder-weights", "missing.pth"]) == EXIT_ERROR
    assert "or use --encoder none" in _error_line(capsys)
    assert main([*argv, "--encoder-weights", weights.name]) == 0  # relative to the cwd
    config = json.loads((run / "config.json").read_text())["model_config"]
    assert (config["encoder"], config["encoder_weights"]) == ("resnet18", str(weights))
    assert config["channels"] == 16 and config["kernel_size"] == 3
    monkeypatch.chdir(tmp_path)  # the run works from anywhere: the path is stored absolute
    assert main(["eval", str(run), "--quiet"]) == 0


def test_a_bad_choice_names_the_flag_and_the_choices(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PYRAMIDFLOW, "--volume-norm", "batch", "--out", str(tmp_path / "r")]
    assert main(argv) == EXIT_ERROR
    line = _error_line(capsys)
    assert "--volume-norm batch" in line and "channel" in line and "spatial" in line


def test_the_settings_in_an_error_read_as_flags(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    argv = [*PYRAMIDFLOW, "--channels", "2", "--no-memory-saving", "--out", str(tmp_path / "r")]
    assert main(argv) == EXIT_ERROR
    assert ("cannot build pyramidflow with --channels 2 --kernel-size 3 --levels 2 "
            "--no-memory-saving --num-stack 1:") in _error_line(capsys)
