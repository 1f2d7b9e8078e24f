"""Epoch selection on a validation split: disjoint and seeded by the data, scored without
touching training, the best checkpoint is the argmax of the recorded metric, resumable, and the
test split is never opened during training."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import Subset

from flowkit.models.base import register_model
from flowkit.models.data import Split
from flowkit.models.engine import training, validation
from flowkit.models.engine.checkpoint import load_checkpoint, load_model, save_checkpoint
from flowkit.models.engine.config import DataSettings, RunConfig
from flowkit.models.engine.files import read_json, write_json
from flowkit.models.engine.run_folder import RunFolder, RunMode, Trained
from flowkit.models.engine.thresholds import fit_thresholds
from flowkit.models.engine.trained_run import run_thresholds
from flowkit.models.engine.training import TrainOptions, train
from flowkit.models.engine.validation import (
    MAX_VALIDATIONS,
    MIN_VALIDATION_IMAGES,
    VALIDATION_KEY,
    SelectBy,
    Validator,
    best_record,
    default_val_every,
    split_training,
)
from flowkit.models.errors import CheckpointError, ConfigError, NonFiniteLossError

from ..tiny_model import TinyAutoencoder, raise_in_loss_at

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = TrainOptions(device=torch.device("cpu"), progress=False, quiet=True)
STEPS_PER_EPOCH = 10  # 48 synthetic training images, 5 held out, batch 4
REPO = Path(__file__).resolve().parents[3]
NAN_MAPS = "tiny-nan-maps"


@register_model(NAN_MAPS)
class NanMaps(TinyAutoencoder):
    """The tiny model whose anomaly maps are NaN: scoring fails after the first epoch."""

    def anomaly_map(self, images: torch.Tensor) -> torch.Tensor:
        return super().anomaly_map(images) * float("nan")


@pytest.fixture
def validated(tiny_config: RunConfig) -> RunConfig:
    """The tiny run with a validation split of 5 of its 48 images, 3 epochs."""
    return dataclasses.replace(tiny_config, epochs=3, val_fraction=0.1)


def _run(tmp_path: Path, name: str, mode: RunMode = RunMode.NEW) -> RunFolder:
    return RunFolder.prepare(tmp_path / name, mode)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def _metrics(run: RunFolder) -> list[dict[str, Any]]:
    """Each epoch's validation record, less its timing."""
    return [{k: v for k, v in record[VALIDATION_KEY].items() if k != "seconds"}
            for record in read_json(run.history)]


# ---------------------------------------------------------------- the split


@settings(max_examples=60, deadline=None)
@given(num_images=st.integers(6, 500), fraction=st.floats(0.0, 0.9), batch=st.integers(1, 8))
def test_the_split_is_disjoint_complete_and_seeded_by_the_data(num_images: int, fraction: float,
                                                               batch: int) -> None:
    try:
        split = split_training(num_images, fraction, batch)
    except ConfigError as error:
        held = max(MIN_VALIDATION_IMAGES, math.ceil(fraction * num_images))
        assert num_images - held < batch
        assert f"holds out {held} of the {num_images}" in str(error)
        return
    assert sorted(split.train + split.held_out) == list(range(num_images))
    assert not set(split.train) & set(split.held_out)
    expected = 0 if fraction == 0 else max(MIN_VALIDATION_IMAGES, math.ceil(fraction * num_images))
    assert len(split.held_out) == expected and len(split.train) >= batch
    assert split == split_training(num_images, fraction, batch)  # no other randomness
    if fraction:  # a larger fraction holds out a superset
        larger = split_training(num_images, fraction / 2, 1)
        assert set(larger.held_out) <= set(split.held_out)


@settings(max_examples=40, deadline=None)
@given(num_images=st.integers(1, 300), fraction=st.floats(0.01, 0.95), batch=st.integers(1, 64))
def test_a_split_error_names_numbers_and_advice_that_works(num_images: int, fraction: float,
                                                           batch: int) -> None:
    try:
        split_training(num_images, fraction, batch)
        return
    except ConfigError as error:
        message = str(error)
    assert f"fewer than one batch of {batch}" in message and "--val-fraction 0 " in message
    fraction_fix = re.search(r"--val-fraction ([0-9.]+) or less", message)
    if fraction_fix:  # the fraction the message names works with the same batch
        assert split_training(num_images, float(fraction_fix.group(1)), batch).train
    elif "add training images" not in message:  # a batch and a fraction that work
        fix = re.search(r"--batch-size (\d+) or less with --val-fraction ([0-9.]+)", message)
        assert split_training(num_images, float(fix.group(2)), int(fix.group(1))).train
    else:
        assert num_images <= MIN_VALIDATION_IMAGES


def test_a_fraction_outside_its_range_is_refused() -> None:
    for fraction in (-0.1, 1.0, float("nan")):
        with pytest.raises(ConfigError, match=r"--val-fraction must lie in \[0, 1\)"):
            split_training(48, fraction, 4)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.sampled_from([0.2, 0.5, 0.7, 0.9, 1.0]), min_size=1, max_size=12))
def test_the_best_record_is_the_first_argmax(values: list[float]) -> None:
    history = [{"epoch": e + 1, VALIDATION_KEY: {"aupro_0.3": v, "pixel_auroc": 1 - v}}
               for e, v in enumerate(values)]
    assert best_record(history, "aupro_0.3")["epoch"] == values.index(max(values)) + 1
    lowest = min(values)
    assert best_record(history, "pixel_auroc")["epoch"] == values.index(lowest) + 1
    assert best_record([{"epoch": 1, "loss": 0.1}], "aupro_0.3") is None


# ---------------------------------------------------------------- training with validation


def test_the_best_checkpoint_is_the_argmax_of_the_recorded_metric(validated: RunConfig,
                                                                  tmp_path: Path) -> None:
    run = _run(tmp_path, "run")
    train(validated, run, OPTIONS)
    history = read_json(run.history)
    assert [r["steps"] for r in history] == [STEPS_PER_EPOCH] * 3
    scores = [r[VALIDATION_KEY][validated.select_by] for r in history]
    best_epoch = scores.index(max(scores)) + 1
    best = load_checkpoint(run.best_checkpoint)  # weights_only, as every checkpoint
    assert best["epoch"] == best_epoch and best["optimizer_state"] is None
    assert float(best["model_state"]["offset"]) != 0.0  # fitted, like final.pt
    assert [r[VALIDATION_KEY]["best"] for r in history] == [
        s == max(scores[: e + 1]) and s not in scores[:e] for e, s in enumerate(scores)]
    assert all(0 <= r[VALIDATION_KEY][k] <= 1 for r in history
               for k in ("pixel_auroc", "aupro_0.3", "image_auroc"))
    assert json.loads(run.best_threshold.read_text())["num_images"] == 43
    assert json.loads(run.threshold.read_text())["num_images"] == 43  # held-out ones not fit
    log = run.log.read_text()
    assert "validation: 5 of 48 training images held out" in log
    assert f"best on validation by aupro_0.3: epoch {best_epoch}" in log


def test_each_checkpoint_gets_its_own_thresholds(validated: RunConfig, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation scores falling after epoch 1 make the best model differ from the final."""
    falling = iter([0.9, 0.8, 0.7])
    monkeypatch.setattr(validation, "aupro", lambda maps, masks, limit: next(falling))
    run = _run(tmp_path, "run")
    train(validated, run, OPTIONS)
    assert load_checkpoint(run.best_checkpoint)["epoch"] == 1
    kept = Subset(validated.data.dataset(Split.TRAIN.value),
                  split_training(48, validated.val_fraction, validated.batch_size).train)
    fitted = {name: fit_thresholds(load_model(checkpoint), kept, validated.batch_size,
                                   OPTIONS.device).to_json()
              for name, checkpoint in (("best", run.best_checkpoint),
                                       ("final", run.final_checkpoint))}
    assert fitted["best"] != fitted["final"]
    assert read_json(run.best_threshold) == fitted["best"]
    assert read_json(run.threshold) == fitted["final"]


def test_scoring_leaves_training_as_it_was(validated: RunConfig, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The same split without scoring trains the same weights, bit for bit."""
    scored = _run(tmp_path, "scored")
    train(validated, scored, OPTIONS)
    with monkeypatch.context() as patch:
        def skip(self: Validator, model: Any, epoch: int, step: int,
                 history: list[dict[str, Any]]) -> dict[str, Any]:
            if epoch == 1:  # reads the model only, as the end of training needs a best.pt
                save_checkpoint(self.best_path, model, None, epoch, step, self.run_config)
            return {"aupro_0.3": 0.0, "pixel_auroc": 0.0, "image_auroc": 0.0, "best": epoch == 1,
                    "seconds": 0.0}
        patch.setattr(Validator, "score", skip)
        unscored = _run(tmp_path, "unscored")
        train(validated, unscored, OPTIONS)
    for name in ("last.pt", "final.pt"):
        torch.testing.assert_close(_state(scored.checkpoints / name),
                                   _state(unscored.checkpoints / name), rtol=0, atol=0)


@pytest.mark.parametrize("stop_step", [STEPS_PER_EPOCH + 4, 2 * STEPS_PER_EPOCH + 1])
def test_resume_with_validation_equals_an_uninterrupted_run(
    validated: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_step: int
) -> None:
    reference = _run(tmp_path, "reference")
    train(validated, reference, OPTIONS)
    interrupted = _run(tmp_path, "interrupted")
    with monkeypatch.context() as patch:
        raise_in_loss_at(patch, stop_step, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            train(validated, interrupted, OPTIONS)
    train(validated, RunFolder.prepare(interrupted.root, RunMode.RESUME), OPTIONS, resume=True)
    for name in ("final.pt", "best.pt"):
        torch.testing.assert_close(_state(interrupted.checkpoints / name),
                                   _state(reference.checkpoints / name), rtol=0, atol=0)
    assert _metrics(interrupted) == _metrics(reference)
    assert [r["loss"] for r in read_json(interrupted.history)] == \
        [r["loss"] for r in read_json(reference.history)]


def test_a_run_killed_before_its_epoch_was_scored_scores_it_on_resume(
    validated: RunConfig, tmp_path: Path
) -> None:
    reference = _run(tmp_path, "reference")
    train(validated, reference, OPTIONS)
    short = dataclasses.replace(validated, epochs=2)
    killed = _run(tmp_path, "killed")
    train(short, killed, OPTIONS)
    history = read_json(killed.history)
    del history[-1][VALIDATION_KEY]  # as if killed between last.pt and the scores
    write_json(killed.history, history)
    train(validated, killed, OPTIONS, resume=True)
    assert _metrics(killed) == _metrics(reference)
    torch.testing.assert_close(_state(killed.best_checkpoint),
                               _state(reference.best_checkpoint), rtol=0, atol=0)


def test_a_new_best_checkpoint_removes_the_thresholds_of_the_old_one(
    validated: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished run extended by an epoch that scores best, stopped before the end of
    training: best.pt is the new epoch, and the old best's thresholds are not left with it."""
    rising = iter([0.5, 0.6, 0.9])
    monkeypatch.setattr(validation, "aupro", lambda maps, masks, limit: next(rising))
    run = _run(tmp_path, "run")
    train(dataclasses.replace(validated, epochs=2), run, OPTIONS)
    assert load_checkpoint(run.best_checkpoint)["epoch"] == 2 and run.best_threshold.is_file()

    def killed(*args: Any) -> None:
        raise RuntimeError("killed before the end of training")

    monkeypatch.setattr(training, "_fit_and_save", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train(validated, RunFolder.prepare(run.root, RunMode.RESUME), OPTIONS, resume=True)
    assert load_checkpoint(run.best_checkpoint)["epoch"] == 3
    assert not run.best_threshold.exists()  # predict fits them for epoch 3, not epoch 2's


def test_thresholds_fitted_after_training_use_the_images_training_fitted_on(
    validated: RunConfig, tmp_path: Path
) -> None:
    """A threshold file deleted (or never written) is fitted again as training fitted it: on
    the training images less those held out for validation."""
    run = _run(tmp_path, "run")
    train(validated, run, OPTIONS)
    for which in Trained:
        checkpoint, thresholds, _ = run.trained(which)
        written = read_json(thresholds)
        thresholds.unlink()
        fitted, now = run_thresholds(run, validated, load_model(checkpoint), OPTIONS.device,
                                     validated.batch_size, path=thresholds)
        assert now and fitted.to_json() == written


def test_resume_refuses_a_best_checkpoint_of_another_epoch(validated: RunConfig,
                                                           tmp_path: Path) -> None:
    run = _run(tmp_path, "run")
    train(dataclasses.replace(validated, epochs=2), run, OPTIONS)
    history = read_json(run.history)
    best = best_record(history, validated.select_by)["epoch"]
    for record in history:  # make the other epoch the recorded best
        record[VALIDATION_KEY][validated.select_by] = float(record["epoch"] != best)
    write_json(run.history, history)
    with pytest.raises(CheckpointError, match=rf"holds epoch {best}, but .* records epoch "
                       rf"{3 - best} as the best; .* --overwrite"):
        train(validated, run, OPTIONS, resume=True)


def test_training_never_opens_the_test_split(validated: RunConfig, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    original = DataSettings.dataset

    def dataset(self: DataSettings, split: str, *args: Any, **kwargs: Any) -> Any:
        if split == Split.TEST.value:
            raise AssertionError("the test split was opened during training")
        return original(self, split, *args, **kwargs)

    monkeypatch.setattr(DataSettings, "dataset", dataset)
    run = _run(tmp_path, "run")
    train(validated, run, OPTIONS)
    assert run.best_checkpoint.is_file()


@pytest.mark.parametrize("select_by", [s.value for s in SelectBy])
def test_select_by_chooses_the_metric(validated: RunConfig, tmp_path: Path,
                                      select_by: str) -> None:
    config = dataclasses.replace(validated, select_by=select_by)
    run = _run(tmp_path, "run")
    train(config, run, OPTIONS)
    best = best_record(read_json(run.history), select_by)
    assert load_checkpoint(run.best_checkpoint)["epoch"] == best["epoch"]


def test_an_unknown_select_by_and_a_split_without_a_batch_are_refused(
    validated: RunConfig, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="--select-by: .*aupro_0.3"):
        train(dataclasses.replace(validated, select_by="loss"), _run(tmp_path, "a"), OPTIONS)
    with pytest.raises(ConfigError, match=r"holds out 24 of the 48 training images, leaving "
                       r"24, fewer than one batch of 30: pass --val-fraction 0.375 or less"):
        train(dataclasses.replace(validated, val_fraction=0.5, batch_size=30),
              _run(tmp_path, "b"), OPTIONS)


@pytest.mark.parametrize(("model", "category", "augment"), [
    ("pyramidflow", "brick", "on"),  # every texture was turned; auto would not turn it now
    ("pyramidflow", "nut", "auto"), ("csflow", "grass", "on"), ("baseline", "brick", "auto"),
])
def test_a_config_written_before_augment_reads_as_what_it_trained(model: str, category: str,
                                                                  augment: str) -> None:
    old = RunConfig(model, {}, DataSettings("synthetic", None, category, 32), 1, 2, 0,
                    {}).to_json()
    del old["augment"]
    config = RunConfig.from_json(old)
    assert config.augment == augment
    if model != "baseline":  # fitted without training: augmentation means nothing
        assert config.augments() is (category != "nut")  # what it did when written


def test_a_model_without_training_skips_validation(tmp_path: Path) -> None:
    config = RunConfig("baseline", {}, DataSettings("synthetic", None, "nut", 32), 0, 4, 0, {},
                       val_fraction=0.1)
    run = _run(tmp_path, "run")
    model = train(config, run, OPTIONS)
    assert not run.best_checkpoint.exists()
    assert read_json(run.threshold)["num_images"] == 48  # nothing held out
    assert "no validation split" in run.log.read_text()
    assert load_model(run.final_checkpoint).name == model.name


def test_a_config_written_before_validation_and_augment_loads_without_them(
        validated: RunConfig) -> None:
    old = validated.to_json()
    del old["val_fraction"], old["select_by"], old["val_every"], old["augment"]
    config = RunConfig.from_json(old)
    assert (config.val_fraction, config.select_by, config.val_every, config.augment) == (
        0.0, "aupro_0.3", 1, "on")  # brick, a texture: turned then, as it is trained again
    assert RunConfig.from_json(validated.to_json()) == validated


def test_non_finite_validation_maps_stop_the_run(validated: RunConfig, tmp_path: Path) -> None:
    run = _run(tmp_path, "run")
    with pytest.raises(NonFiniteLossError, match=r"validation anomaly maps after epoch 1 are "
                       r"not finite.*keeps epoch 1"):
        train(dataclasses.replace(validated, model=NAN_MAPS), run, OPTIONS)
    assert load_checkpoint(run.last_checkpoint)["epoch"] == 1
    assert not run.best_checkpoint.exists()


@pytest.mark.slow
def test_a_failure_while_rank_0_scores_stops_every_process(tmp_path: Path) -> None:
    """Under torchrun the other process learns of rank 0's failure instead of waiting for it."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": __name__,
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "flowkit", "train", "--model", NAN_MAPS, "--image-size", "32", "--epochs", "2",
         "--batch-size", "4", "--out", str(tmp_path / "run"), "--quiet"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode != 0
    assert "validation anomaly maps after epoch 1 are not finite" in result.stderr
    assert "rank 0 failed while scoring epoch 1" in result.stderr


# ---------------------------------------------------------------- every k epochs


@given(st.integers(1, 500), st.integers(1, 50))
def test_scored_epochs_are_every_kth_and_the_last(epochs: int, every: int) -> None:
    config = RunConfig("tiny", {}, DataSettings("synthetic", None, "nut", 32), epochs, 4, 0, {},
                       val_every=every)
    scored = [e for e in range(1, epochs + 1) if config.validates(e)]
    assert scored == sorted({*range(every, epochs + 1, every), epochs})
    default = dataclasses.replace(config, val_every=default_val_every(epochs))
    scored = [e for e in range(1, epochs + 1) if default.validates(e)]
    assert scored[-1] == epochs and len(scored) <= MAX_VALIDATIONS
    assert default_val_every(epochs) == 1 or len(scored) > MAX_VALIDATIONS // 2  # not too few


def test_val_every_scores_those_epochs_and_selects_among_them(validated: RunConfig,
                                                               tmp_path: Path) -> None:
    config = dataclasses.replace(validated, epochs=5, val_every=2)
    run = _run(tmp_path, "run")
    train(config, run, OPTIONS)
    history = read_json(run.history)
    assert [r["epoch"] for r in history if VALIDATION_KEY in r] == [2, 4, 5]
    best = best_record(history, config.select_by)
    scores = {r["epoch"]: r[VALIDATION_KEY][config.select_by] for r in history
              if VALIDATION_KEY in r}
    assert best["epoch"] == max(scores, key=lambda e: (scores[e], -e))
    assert load_checkpoint(run.best_checkpoint)["epoch"] == best["epoch"]
    assert "after every 2 epochs and the last" in run.log.read_text()


def test_val_every_below_one_is_refused(validated: RunConfig, tmp_path: Path) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="--val-every must be a whole number"):
            train(dataclasses.replace(validated, val_every=bad), _run(tmp_path, f"r{bad}"),
                  OPTIONS)


def test_a_resumed_run_scores_only_the_epochs_val_every_names(
    validated: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(validated, epochs=3, val_every=2)
    stopped = _run(tmp_path, "stopped")
    with monkeypatch.context() as patch:  # stopped at epoch 2's first step: epoch 1 unscored
        raise_in_loss_at(patch, STEPS_PER_EPOCH + 1, KeyboardInterrupt())
        with pytest.raises(KeyboardInterrupt):
            train(config, stopped, OPTIONS)
    train(config, RunFolder.prepare(stopped.root, RunMode.RESUME), OPTIONS, resume=True)
    assert [r["epoch"] for r in read_json(stopped.history) if VALIDATION_KEY in r] == [2, 3]
