"""SIGINT and SIGTERM: training stops after the current step with a checkpoint, and resuming it
ends with exactly the weights of an uninterrupted run."""

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

from flowkit.models.cli import EXIT_SIGNAL_BASE, build_parser
from flowkit.models.cli.settings import resolve_config
from flowkit.models.engine.checkpoint import load_checkpoint
from flowkit.models.engine.config import RunConfig
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.signals import StopSignals
from flowkit.models.engine.training import TrainOptions, train
from flowkit.models.errors import Interrupted

from ..threads import one_thread
from ..tiny_model import TINY, TINY_MODULE, TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

OPTIONS = TrainOptions(torch.device("cpu"), progress=False, quiet=True)
REPO = Path(__file__).resolve().parents[3]
STEPS_PER_EPOCH = 12  # 48 synthetic training images, batch 4
EPOCHS = 8
BATCH_ONE = 43  # steps per epoch at --batch-size 1 (48 images, 5 held out for validation):
# a signal lands mid-epoch nearly always, or while the first epoch is scored (then it stops
# after the next step)
CLI_FLAGS = ["--model", TINY, "--data", "synthetic", "--category", "brick", "--image-size",
             "32", "--epochs", str(EPOCHS), "--batch-size", "1", "--quiet"]


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model_state"]


def _losses(run: RunFolder) -> list[float]:
    return [record["loss"] for record in json.loads(run.history.read_text())]


def _signal_at(monkeypatch: pytest.MonkeyPatch, call: int, *numbers: int) -> None:
    """Make the tiny model's ``loss`` send this process real signals on its ``call``-th call."""
    count = {"calls": 0}
    original = TinyAutoencoder.loss

    def loss(self: TinyAutoencoder, images: torch.Tensor) -> torch.Tensor:
        count["calls"] += 1
        if count["calls"] == call:
            for number in numbers:
                os.kill(os.getpid(), number)
        return original(self, images)

    monkeypatch.setattr(TinyAutoencoder, "loss", loss)


@pytest.fixture
def reference(tiny_config: RunConfig, tmp_path: Path) -> tuple[RunConfig, RunFolder]:
    """An uninterrupted run of three epochs."""
    config = dataclasses.replace(tiny_config, epochs=3)
    run = RunFolder.prepare(tmp_path / "reference", RunMode.NEW)
    train(config, run, OPTIONS)
    return config, run


def test_signal_mid_epoch_saves_the_step_and_resumes_exactly(
    reference: tuple[RunConfig, RunFolder], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, reference_run = reference
    run = RunFolder.prepare(tmp_path / "stopped", RunMode.NEW)
    with monkeypatch.context() as patch, StopSignals() as stop:
        _signal_at(patch, STEPS_PER_EPOCH + 5, signal.SIGTERM)  # during step 17
        options = TrainOptions(torch.device("cpu"), progress=False, quiet=True, stop=stop)
        with pytest.raises(Interrupted, match=(
            r"stopped by SIGTERM after step 17 \(epoch 2, 5 of 12 steps\), saved in "
            r".*last\.pt; continue with: flowkit train --out .*stopped --resume"
        )) as raised:
            train(config, run, options)
    assert raised.value.signal_number == signal.SIGTERM
    saved = load_checkpoint(run.last_checkpoint)
    assert (saved["epoch"], saved["step"], saved["partial_epoch"]["steps"]) == (1, 17, 5)
    assert not run.final_checkpoint.exists()
    assert "stopped by SIGTERM after step 17" in run.log.read_text()

    resumed = RunFolder.prepare(run.root, RunMode.RESUME)
    train(config, resumed, OPTIONS, resume=True)
    torch.testing.assert_close(_state(run.final_checkpoint),
                               _state(reference_run.final_checkpoint), rtol=0, atol=0)
    assert _losses(run) == _losses(reference_run)


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(
    tiny_config: RunConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = RunFolder.prepare(tmp_path / "run", RunMode.NEW)
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the suite runs in the background
    with monkeypatch.context() as patch, StopSignals() as stop:
        _signal_at(patch, STEPS_PER_EPOCH + 2, signal.SIGINT, signal.SIGINT)
        options = TrainOptions(torch.device("cpu"), progress=False, quiet=True, stop=stop)
        with pytest.raises(Interrupted, match=r"^stopped by SIGINT; .*last\.pt is kept; "
                           r"continue with: flowkit train --out .* --resume$"):
            train(tiny_config, run, options)
    saved = load_checkpoint(run.last_checkpoint)
    assert (saved["epoch"], saved["step"]) == (1, STEPS_PER_EPOCH)  # the epoch's end
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def _cli_config() -> RunConfig:
    """The settings ``flowkit train CLI_FLAGS`` resolves to."""
    return resolve_config(build_parser().parse_args(["train", *CLI_FLAGS]))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The final weights of the command line's run, uninterrupted (trained in this process)."""
    run = RunFolder.prepare(tmp_path_factory.mktemp("uninterrupted") / "run", RunMode.NEW)
    with one_thread():
        train(_cli_config(), run, OPTIONS)
    return _state(run.final_checkpoint)


@pytest.mark.slow
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signalled_process_saves_and_resumes_to_the_uninterrupted_weights(
    number: int, uninterrupted: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """A real ``flowkit train`` process and a real signal; what ``--resume`` does (without the
    evaluation) then ends with the uninterrupted weights."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": TINY_MODULE,
           "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "flowkit", "train", *CLI_FLAGS, "--out",
                                str(out)], env=env, cwd=tmp_path, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, number)
    _, err = process.communicate(timeout=60)
    assert process.returncode == EXIT_SIGNAL_BASE + number, err
    name = signal.Signals(number).name
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"stopped by {name} after step ")
    assert err.strip().endswith(f"continue with: flowkit train --out {out} --resume")
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert saved["step"] == saved["epoch"] * BATCH_ONE + saved["partial_epoch"]["steps"]
    assert saved["epoch"] < EPOCHS, "the run finished before the signal"
    assert not (out / "checkpoints" / "final.pt").exists()

    run = RunFolder.prepare(out, RunMode.RESUME)
    train(run.read_config(), run, OPTIONS, resume=True)
    torch.testing.assert_close(_state(run.final_checkpoint), uninterrupted, rtol=0, atol=0)
