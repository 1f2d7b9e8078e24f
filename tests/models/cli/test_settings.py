"""A run's settings from the flags: presets, the models' synthetic-data defaults, and one-line
argument errors."""

from __future__ import annotations

import shlex

import pytest

from flowkit.models.base import MODELS
from flowkit.models.cli import EXIT_ERROR, build_parser, main
from flowkit.models.cli.command_line import train_command
from flowkit.models.cli.settings import resolve_config
from flowkit.models.errors import ConfigError

from ..tiny_model import TINY, TinyAutoencoder


def _config(*argv: str):
    return resolve_config(build_parser().parse_args(["train", "--model", TINY, *argv]))


def test_a_preset_fills_the_flags_not_given() -> None:
    config = _config("--preset", "wide")
    assert (config.model_config["hidden"], config.epochs, config.data.image_size) == (4, 3, 64)
    given = _config("--preset", "wide", "--hidden", "5", "--image-size", "32")
    assert (given.model_config["hidden"], given.epochs, given.data.image_size) == (5, 3, 32)


def test_an_unknown_preset_is_one_line_listing_the_choices(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "--model", TINY, "--preset", "huge", "--out", str(tmp_path / "r")]) \
        == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: the model 'tiny' has no preset 'huge'; its presets: wide"]
    assert not (tmp_path / "r").exists()


def test_synthetic_defaults_are_the_models_own() -> None:
    config = _config()
    assert (config.data.image_size, config.epochs) == (
        TinyAutoencoder.synthetic_image_size, TinyAutoencoder.synthetic_epochs)
    on_disk = _config("--data", "folder", "--data-root", "somewhere")
    assert (on_disk.data.image_size, on_disk.epochs) == (
        TinyAutoencoder.default_image_size, TinyAutoencoder.default_epochs)


@pytest.mark.parametrize("name", ["pyramidflow", "baseline"])
def test_the_built_in_models_keep_their_synthetic_defaults(name: str) -> None:
    assert (MODELS[name].synthetic_image_size, MODELS[name].synthetic_epochs) == (128, 5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--epochs", "x"], "argument --epochs: invalid non_negative_int value: 'x'"),
        (["train", "--bogus"], "unrecognized arguments: --bogus"),
        (["fly"], "argument COMMAND: invalid choice: 'fly'"),
    ],
)
def test_a_bad_flag_is_one_line_with_a_hint(argv: list[str], message: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert lines[0].endswith("--help")


MVTEC = ["--data", "mvtec", "--data-root", "somewhere"]  # never read: settings only


@pytest.mark.parametrize(("argv", "augments"), [
    (["--category", "brick"], True),  # auto, the tiny model: the base rule, every texture
    (["--category", "nut"], False),
    (["--model", "pyramidflow", *MVTEC, "--category", "carpet"], True),  # auto
    (["--model", "pyramidflow", "--category", "brick"], False),  # auto: not a synthetic texture
    (["--model", "pyramidflow", "--category", "brick", "--augment", "on"], True),
    (["--model", "pyramidflow", *MVTEC, "--category", "carpet", "--augment", "off"], False),
])
def test_augment_follows_the_models_rule_and_the_flag_decides(argv: list[str], augments: bool,
                                                          tmp_path) -> None:
    config = _config(*argv)
    assert config.augments() is augments
    words = shlex.split(train_command(config, tmp_path / "run"))
    assert resolve_config(build_parser().parse_args(words[1:])) == config  # stored command


def test_a_resumed_run_keeps_its_augmentation_and_refuses_another() -> None:
    run = _config("--category", "brick", "--augment", "off")
    assert resolve_config(build_parser().parse_args(["train"]), base=run).augment == "off"
    with pytest.raises(ConfigError, match=r"the flags change augment: 'off' -> 'on'"):
        resolve_config(build_parser().parse_args(["train", "--augment", "on"]), base=run)


def test_augment_is_refused_for_a_model_fitted_without_training() -> None:
    assert resolve_config(build_parser().parse_args(
        ["train", "--model", "baseline", "--augment", "auto"])).augment == "auto"
    with pytest.raises(ConfigError, match="the model 'baseline' is fitted without gradient "
                       "steps, on the images as they are: --augment on would change nothing; "
                       "drop it"):
        resolve_config(build_parser().parse_args(["train", "--model", "baseline",
                                                  "--augment", "on"]))
