"""Training under ``torchrun``: the processes' batches make up the global batch, and two gloo
processes end where one process with the same global batch ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from flowkit.models.base import register_model
from flowkit.models.cli import EXIT_ERROR, build_parser, main
from flowkit.models.cli.settings import resolve_config
from flowkit.models.data import Split
from flowkit.models.engine.checkpoint import load_checkpoint
from flowkit.models.engine.config import RunConfig
from flowkit.models.engine.distributed import Distributed, per_process_batch
from flowkit.models.engine.evaluate import METRIC_LABELS, compute_metrics, predict_dataset
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.sampling import TrainingImages, epoch_loader
from flowkit.models.engine.training import TrainOptions, train
from flowkit.models.errors import ConfigError

from ...gloo import free_port, gloo_process, spawn
from ..tiny_model import TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

EXACT = "tiny-exact"
REPO = Path(__file__).resolve().parents[3]
PROCESSES = 2
FLAGS = ["--model", EXACT, "--data", "synthetic", "--category", "brick", "--image-size", "32",
         "--epochs", "2", "--batch-size", "4", "--quiet"]


@register_model(EXACT)
class ExactTiny(TinyAutoencoder):
    """The tiny model without training noise: its loss is a plain mean over the images of a
    batch, so processes with a part of the batch each average to one with all of it."""

    def __init__(self, hidden: int = 2, noise: float = 0.0, levels: int = 1) -> None:
        super().__init__(hidden=hidden, noise=noise, levels=levels)


def _batches(config: RunConfig, rank: int, world_size: int, skip: int = 0) -> list[set[int]]:
    """The image indices of each batch a process takes in epoch 1."""
    images = TrainingImages(config.data.dataset(Split.TRAIN.value), config.seed, augment=False)
    loader = epoch_loader(images, config.batch_size, config.seed, 1, skip,
                          Distributed(rank, world_size), workers=0)
    return [set(indices) for indices in loader.batch_sampler]


def test_the_processes_batches_make_up_the_global_batch(tiny_config: RunConfig) -> None:
    alone = _batches(tiny_config, 0, 1)
    parts = [_batches(tiny_config, rank, PROCESSES) for rank in range(PROCESSES)]
    assert len(alone) == len(parts[0]) == 12
    assert all(len(part) == tiny_config.batch_size // PROCESSES for part in parts[0])
    assert [first | second for first, second in zip(*parts, strict=True)] == alone
    assert _batches(tiny_config, 0, 1, skip=5) == alone[5:]  # a resumed epoch


def test_a_global_batch_must_split_evenly() -> None:
    assert per_process_batch(6, 3) == 2
    with pytest.raises(ConfigError, match="--batch-size 5 .* over 2 processes; use 4 or 6"):
        per_process_batch(5, 2)


@pytest.mark.parametrize("command", [["eval", "run"], ["predict", "run", "x.png", "--out", "o"]])
def test_eval_and_predict_refuse_torchrun(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(command) == EXIT_ERROR
    assert "runs in one process" in capsys.readouterr().err


def _reference(tmp_path: Path) -> tuple[dict[str, torch.Tensor], list[float], dict[str, float]]:
    """Weights, losses and metrics of one process with the same flags (same global batch)."""
    config = resolve_config(build_parser().parse_args(["train", *FLAGS]))
    run = RunFolder.prepare(tmp_path / "one", RunMode.NEW)
    device = torch.device("cpu")
    model = train(config, run, TrainOptions(device, progress=False, quiet=True))
    evaluation = predict_dataset(model, config.data.dataset(Split.TEST.value),
                                 config.batch_size, device)
    losses = [record["loss"] for record in json.loads(run.history.read_text())]
    return model.state_dict(), losses, compute_metrics(evaluation)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_with_the_same_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FLOWKIT_MODEL_MODULES": __name__,
           "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(PROCESSES), "-m", "flowkit", "train", *FLAGS, "--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("| image AUROC") == 2  # rank 0 alone reports: final and best
    log = [line.split(":")[0] for line in (out / "train.log").read_text().splitlines()]
    assert [line for line in log if line.startswith("epoch")] == [
        "epoch 1/2", "epoch 1 on validation", "epoch 2/2", "epoch 2 on validation"]  # once

    weights, losses, metrics = _reference(tmp_path)
    final = load_checkpoint(out / "checkpoints" / "final.pt")
    assert final["step"] == 20  # 2 epochs of 10 global batches (5 of 48 images validate)
    torch.testing.assert_close(final["model_state"], weights, rtol=1e-5, atol=1e-6)
    history = json.loads((out / "history.json").read_text())
    assert [record["loss"] for record in history] == pytest.approx(losses, rel=1e-6)
    assert all(record["validation"]["seconds"] > 0 for record in history)  # rank 0 scored
    assert (out / "checkpoints" / "best.pt").is_file()
    recorded = json.loads((out / "metrics.json").read_text())
    assert {key: recorded[key] for key in METRIC_LABELS} == pytest.approx(metrics, abs=1e-4)


def _native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _threads_around_a_session(rank: int, world: int, port: int, out: str) -> None:
    """Threads before joining, inside and after leaving, with a DDP module that outlives the
    session (as a caller's local or an exception's traceback keeps it)."""
    nn.Linear(3, 1)(torch.ones(2, 3)).sum().backward()  # threads autograd starts exist before
    before = _native_threads()
    with gloo_process(rank, world, port) as distributed:
        model = distributed.wrap(nn.Linear(3, 1), torch.device("cpu"))
        loss = model(torch.ones(2, 3)).sum()
        loss.backward()
        distributed.reduce_step(loss, stop=False)
        during = _native_threads()
    torch.save([before, during, _native_threads()], f"{out}.{rank}")
    del model  # after the session: it must not free (and wait for) the process group


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_leaving_the_session_ends_the_process_groups_threads(tmp_path: Path) -> None:
    """The process group ends with the session, its threads joined: gloo worker threads still
    running at interpreter shutdown abort a rank that exits just after a collective (SIGABRT,
    "terminate called without an active exception"), and a group freed later by a DDP module
    can deadlock with them."""
    out = str(tmp_path / "threads")
    spawn(_threads_around_a_session, (PROCESSES, free_port(), out), PROCESSES)
    counts = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(PROCESSES)]
    assert all(before < during for before, during, _ in counts), counts  # gloo's threads
    assert all(before == after for before, _, after in counts), counts
