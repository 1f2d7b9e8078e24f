"""The training loop: resuming equals not stopping, NaN losses stop it, data order is seeded."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from flowkit.models.engine.checkpoint import load_checkpoint
from flowkit.models.engine.config import RunConfig
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.sampling import epoch_generator
from flowkit.models.engine.training import TrainOptions, train
from flowkit.models.errors import ConfigError, NonFiniteLossError

from ..tiny_model import TINY_MODULE, TinyAutoencoder, raise_in_loss_at

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = TrainOptions(device=torch.device("cpu"), progress=False, quiet=True)
REPO = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 12  # 48 synthetic training images, batch 4


def _run(tmp_path: Path, name: str, mode: RunMode = RunMode.NEW) -> RunFolder:
    return RunFolder.prepare(tmp_path / name, mode)


def _final_state(run: RunFolder) -> dict[str, torch.Tensor]:
    return load_checkpoint(run.final_checkpoint)["model_state"]


def test_epoch_order_depends_on_seed_and_epoch_only() -> None:
    draw = [torch.randperm(10, generator=epoch_generator(seed, epoch)).tolist()
            for seed, epoch in [(0, 0), (0, 0), (0, 1), (1, 0)]]
    assert draw[0] == draw[1]
    assert draw[0] != draw[2] and draw[0] != draw[3]


def test_training_writes_history_and_checkpoints(tiny_config: RunConfig, tmp_path: Path) -> None:
    run = _run(tmp_path, "run")
    model = train(tiny_config, run, OPTIONS)
    assert not model.training
    history = json.loads(run.history.read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    assert all(record["steps"] == STEPS_PER_EPOCH for record in history)
    last = load_checkpoint(run.last_checkpoint)
    assert (last["epoch"], last["step"]) == (2, 2 * STEPS_PER_EPOCH)
    final = load_checkpoint(run.final_checkpoint)
    assert final["optimizer_state"] is None
    assert float(final["model_state"]["offset"]) != 0.0  # fit_normal ran before saving
    assert RunConfig.from_json(json.loads(run.config.read_text())) == tiny_config
    assert "epoch 2/2" in run.log.read_text()


def test_resume_after_interruption_equals_an_uninterrupted_run(
    tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = dataclasses.replace(tiny_config, epochs=3)
    reference = _run(tmp_path, "reference")
    train(config, reference, OPTIONS)

    interrupted = _run(tmp_path, "interrupted")
    with monkeypatch.context() as patch:
        raise_in_loss_at(patch, STEPS_PER_EPOCH + 5, KeyboardInterrupt())  # inside epoch 2
        with pytest.raises(KeyboardInterrupt):
            train(config, interrupted, OPTIONS)
    assert load_checkpoint(interrupted.last_checkpoint)["epoch"] == 1
    assert not interrupted.final_checkpoint.exists()
    train(config, RunFolder.prepare(interrupted.root, RunMode.RESUME), OPTIONS, resume=True)

    torch.testing.assert_close(_final_state(interrupted), _final_state(reference), rtol=0,
                               atol=0)
    losses = [[r["loss"] for r in json.loads(run.history.read_text())]
              for run in (reference, interrupted)]
    assert losses[0] == losses[1]


@pytest.mark.parametrize(("category", "augment", "augmented", "why"), [
    ("brick", "auto", True, "--augment auto: tiny turns textures (MVTec AD's five and the "
     "synthetic ones)"),
    ("nut", "auto", False, "--augment auto: tiny turns textures (MVTec AD's five and the "
     "synthetic ones)"),
    ("brick", "off", False, "--augment off"),
    ("nut", "on", True, "--augment on"),
])
def test_the_model_trains_on_flipped_and_rotated_images_when_augment_says_so(
    tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, category: str,
    augment: str, augmented: bool, why: str
) -> None:
    """The images the loss sees, and the line of ``train.log`` that says so."""
    config = dataclasses.replace(tiny_config, epochs=1, augment=augment,
                                 data=dataclasses.replace(tiny_config.data, category=category))
    train_images = config.data.dataset("train")
    plain = {item.image.numpy().tobytes() for item in train_images}
    seen: list[torch.Tensor] = []
    original = TinyAutoencoder.loss

    def recording(self: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
        seen.extend(images)
        return original(self, images)

    monkeypatch.setattr(TinyAutoencoder, "loss", recording)
    run = _run(tmp_path, "run")
    train(config, run, OPTIONS)
    assert len(seen) == len(train_images) // config.batch_size * config.batch_size
    transformed = sum(image.numpy().tobytes() not in plain for image in seen)
    assert (transformed > len(seen) // 2) if augmented else transformed == 0
    note = [line for line in run.log.read_text().splitlines() if line.startswith("augmentation")]
    assert note == [f"augmentation: random flips and quarter turns of the training images ({why})"
                    if augmented else
                    f"augmentation: none, the training images as they are ({why})"]


def test_resume_can_extend_but_not_shorten(tiny_config: RunConfig, tmp_path: Path) -> None:
    run = _run(tmp_path, "run")
    train(tiny_config, run, OPTIONS)
    longer = dataclasses.replace(tiny_config, epochs=3)
    train(longer, run, OPTIONS, resume=True)
    assert len(json.loads(run.history.read_text())) == 3
    with pytest.raises(ConfigError, match="already trained 3 epochs; pass --epochs 3"):
        train(tiny_config, run, OPTIONS, resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = TinyAutoencoder.loss
    calls = {"count": 0}

    def loss(self: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
        calls["count"] += 1
        value = original(self, images)
        return value * float("nan") if calls["count"] == STEPS_PER_EPOCH + 3 else value

    monkeypatch.setattr(TinyAutoencoder, "loss", loss)
    run = _run(tmp_path, "run")
    with pytest.raises(NonFiniteLossError, match=r"loss became nan at step 15 \(epoch 2\); "
                       r"the last good checkpoint is .*last\.pt \(epoch 1\)"):
        train(tiny_config, run, OPTIONS)
    good = load_checkpoint(run.last_checkpoint)
    assert (good["epoch"], good["step"]) == (1, STEPS_PER_EPOCH)
    assert all(torch.isfinite(t).all() for t in good["model_state"].values())
    assert not run.final_checkpoint.exists()


def test_batch_larger_than_the_training_set(tiny_config: RunConfig, tmp_path: Path) -> None:
    config = dataclasses.replace(tiny_config, batch_size=1000)
    with pytest.raises(ConfigError, match="fewer than one batch of 1000; lower --batch-size"):
        train(config, _run(tmp_path, "run"), OPTIONS)


@pytest.mark.slow
def test_resume_after_sigkill_equals_an_uninterrupted_run(tiny_config: RunConfig,
                                                          tmp_path: Path) -> None:
    """A real process killed between (or during) checkpoint writes resumes to the same weights."""
    epochs = 20
    reference = _run(tmp_path, "reference")
    model_config = {**tiny_config.model_config, "hidden": 3}  # the CLI's default for bricks
    train(dataclasses.replace(tiny_config, epochs=epochs, model_config=model_config,
                              val_fraction=0.1), reference, OPTIONS)  # the CLI's default

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "flowkit", "train", "--model", "tiny", "--data",
               "synthetic", "--category", "brick", "--image-size", "32", "--epochs",
               str(epochs), "--out", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": TINY_MODULE,
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # somewhere in a later epoch, maybe mid-write
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it was killed"
    assert not (out / "checkpoints" / "final.pt").exists()

    resumed = subprocess.run([*command, "--resume"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.rglob("*.tmp"))  # a write the kill interrupted is cleaned up
    killed_run = RunFolder(out)
    torch.testing.assert_close(_final_state(killed_run), _final_state(reference), rtol=0,
                               atol=0)
