"""``flowkit train --seeds``: one run per seed, the summary of their metrics, resuming a job,
its errors (raised before anything is written), and ``flowkit summary``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flowkit.models.cli import EXIT_ERROR, EXIT_SIGNAL_BASE, build_parser, main
from flowkit.models.cli import train as train_command
from flowkit.models.cli.settings import resolve_config
from flowkit.models.engine.checkpoint import load_checkpoint
from flowkit.models.engine.evaluate import METRIC_LABELS
from flowkit.models.engine.run_folder import RunFolder
from flowkit.models.engine.seeds import flatten_numbers
from flowkit.models.errors import Interrupted

from ..engine.test_signals import _signal_at
from ..threads import one_thread
from ..tiny_model import TINY

pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = ["--model", TINY, "--image-size", "32", "--epochs", "1", "--quiet"]
STEPS = 12  # steps per seed at most: 48 synthetic training images (some held out), batch 4


def _metrics(out: Path, seed: int) -> dict[str, Any]:
    return json.loads((out / f"seed-{seed}" / "metrics.json").read_text())


def _quality(out: Path, seed: int) -> dict[str, float]:
    record = _metrics(out, seed)
    return {key: record[key] for key in METRIC_LABELS}


def _files(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time (ns)."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A finished job of three seeds, and what it printed."""
    out = tmp_path_factory.mktemp("job") / "out"
    printed = io.StringIO()
    with one_thread(), contextlib.redirect_stdout(printed):
        assert main(["train", *SMALL, "--seeds", "0", "1", "2", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_the_summary_is_the_mean_and_std_of_the_seeds_metrics(job: tuple[Path, str]) -> None:
    out, printed = job
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and summary["n"] == 3
    records = {seed: flatten_numbers(_metrics(out, seed)) for seed in (0, 1, 2)}
    assert list(summary["metrics"]) == list(records[0])
    assert set(METRIC_LABELS) <= set(summary["metrics"])
    for key, entry in summary["metrics"].items():
        values = [records[seed][key] for seed in (0, 1, 2)]
        assert entry["values"] == {"0": values[0], "1": values[1], "2": values[2]}
        assert entry["mean"] == pytest.approx(np.mean(values), rel=1e-12)
        assert entry["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-15)
        assert entry["n"] == 3
    assert len({_quality(out, seed)["pixel_auroc"] for seed in (0, 1, 2)}) == 3  # independent
    line = next(line for line in printed.splitlines() if line.startswith("| pixel_auroc "))
    entry = summary["metrics"]["pixel_auroc"]
    assert f"{entry['mean']:.4f} ± {entry['std']:.4f}" in line and line.rstrip().endswith("3 |")
    assert "mean ± std" in printed and "ddof=1" in printed


def test_each_seed_is_the_single_run_its_stored_command_reproduces(
    job: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = job
    summary = json.loads((out / "summary.json").read_text())
    for seed in (0, 1, 2):
        folder = out / f"seed-{seed}"
        config = RunFolder.open(folder).read_config()
        assert config.seed == seed
        command = summary["runs"][str(seed)]["command"]
        assert f"this seed alone: {command}" in (folder / "train.log").read_text()
        words = shlex.split(command)
        assert words[:2] == ["flowkit", "train"] and words[-2:] == ["--out", str(folder)]
        assert resolve_config(build_parser().parse_args(words[1:])) == config
    alone = tmp_path / "alone"
    words = shlex.split(summary["runs"]["1"]["command"])[2:-2]
    assert main(["train", *words, "--out", str(alone), "--quiet"]) == 0
    record = json.loads((alone / "metrics.json").read_text())
    assert {key: record[key] for key in METRIC_LABELS} == _quality(out, 1)
    torch.testing.assert_close(
        load_checkpoint(alone / "checkpoints" / "final.pt")["model_state"],
        load_checkpoint(out / "seed-1" / "checkpoints" / "final.pt")["model_state"],
        rtol=0, atol=0)


def test_a_stopped_job_resumes_keeping_the_finished_seeds(
    job: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT during seed 1 of 0 1 2: the message names what is done and the command; resuming
    keeps seed 0 untouched, continues seed 1, starts seed 2 with the job's settings, and ends
    where the uninterrupted job ended."""
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _signal_at(patch, STEPS + 3, signal.SIGINT)  # in seed 1
        code = main(["train", *SMALL, "--seeds", "0", "1", "2", "--out", str(out)])
    assert code == EXIT_SIGNAL_BASE + signal.SIGINT
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.match(r"stopped by SIGINT after step \d+ \(epoch 1, ", message)
    assert message.endswith(f"Seeds 0 1 2: finished 0; seed 1 was stopped. Continue the whole "
                            f"job (finished seeds are kept) with: flowkit train --out {out} "
                            "--seeds 0 1 2 --resume")
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    assert not (out / "seed-1" / "metrics.json").exists()
    seed0 = _files(out / "seed-0")

    assert main(["train", "--out", str(out), "--seeds", "0", "1", "2", "--resume",
                 "--quiet"]) == 0
    assert _files(out / "seed-0") == seed0  # not retrained, not re-evaluated
    finished, _ = job
    for seed in (0, 1, 2):
        assert _quality(out, seed) == _quality(finished, seed)
        assert (RunFolder.open(out / f"seed-{seed}").read_config()
                == RunFolder.open(finished / f"seed-{seed}").read_config())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    before = _files(out)
    assert main(["train", "--out", str(out), "--seeds", "0", "1", "2", "--resume",
                 "--quiet"]) == 0  # all finished: only the summary is rewritten
    after = _files(out)
    assert {k: v for k, v in after.items() if k != "summary.json"} == \
        {k: v for k, v in before.items() if k != "summary.json"}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seeds", "0", "1", "0"], "--seeds lists 0 more than once"),
        (["--seeds", "0", "--seed", "1"], "argument --seed: not allowed with argument --seeds"),
        (["--seeds", "0", "-1"], "argument --seeds: must be zero or more, got -1"),
        (["--seeds", "0", "1", "--levels", "3", "--image-size", "34"],
         "image height 34 is not a multiple of 4"),
    ],
)
def test_bad_seeds_write_nothing(argv: list[str], message: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "argument" in message else contextlib.nullcontext():
        assert main(["train", *SMALL, *argv, "--out", str(out)]) == EXIT_ERROR
    assert message in _error_line(capsys)
    assert not out.exists()


def test_an_existing_job_is_refused_untouched_and_checked_whole_before_resuming(
    job: tuple[Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    finished, _ = job
    out = tmp_path / "out"
    assert main(["train", *SMALL, "--seeds", "0", "1", "--out", str(out)]) == 0
    files = _files(out)
    assert main(["train", *SMALL, "--seeds", "0", "1", "--out", str(out)]) == EXIT_ERROR
    assert "pass --resume to continue the job, --overwrite to replace it" in _error_line(capsys)
    # seed 0 unfinished, seed 1's last.pt damaged: refused before seed 0 continues
    (out / "seed-0" / "metrics.json").unlink()
    (out / "seed-1" / "checkpoints" / "last.pt").write_bytes(b"damaged")
    files = _files(out)
    assert main(["train", "--out", str(out), "--seeds", "0", "1", "--resume"]) == EXIT_ERROR
    assert "seed-1/checkpoints/last.pt" in _error_line(capsys)
    assert _files(out) == files
    # a flag that changes the job's settings is refused for every seed, before any trains
    assert main(["train", "--out", str(out), "--seeds", "0", "2", "--resume",
                 "--lr", "0.5"]) == EXIT_ERROR
    assert "optimizer.lr: 0.01 -> 0.5" in _error_line(capsys)
    assert _files(out) == files
    # --overwrite replaces the whole job, also the seeds not asked for now
    assert main(["train", *SMALL, "--seeds", "2", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["seed-2", "summary.json"]
    assert _quality(out, 2) == _quality(finished, 2)


def test_a_resumed_job_of_new_seeds_only_takes_the_settings_of_the_job_s_runs(
    job: tuple[Path, str], tmp_path: Path
) -> None:
    finished, _ = job
    out = tmp_path / "out"
    out.mkdir()
    shutil.copytree(finished / "seed-0", out / "seed-0")
    assert main(["train", "--out", str(out), "--seeds", "1", "--resume", "--quiet"]) == 0
    assert _quality(out, 1) == _quality(finished, 1)


def test_torchrun_is_refused_and_flowkit_summary_does_it_seed_by_seed(
    job: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        patch.setenv("WORLD_SIZE", "2")
        assert main(["train", *SMALL, "--seeds", "0", "1", "--out", str(out)]) == EXIT_ERROR
    assert ("not under torchrun; there train each seed in turn with --seed S --out "
            "OUT/seed-S, then write the summary with: flowkit summary OUT") in _error_line(capsys)
    assert not out.exists()
    for seed in (0, 1):  # what the advice says (here in one process)
        assert main(["train", *SMALL, "--seed", str(seed), "--out",
                     str(out / f"seed-{seed}")]) == 0
    capsys.readouterr()
    assert main(["summary", str(out)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    finished, _ = job
    expected = json.loads((finished / "summary.json").read_text())
    for key in METRIC_LABELS:
        assert summary["metrics"][key]["values"] == {
            seed: value for seed, value in expected["metrics"][key]["values"].items()
            if seed in ("0", "1")}
    command = summary["runs"]["1"]["command"]
    assert " --seed 1 " in command and command.endswith(f" --out {out / 'seed-1'}")
    assert "| image_auroc " in printed and "2 seeds in" in printed
    assert main(["summary", str(out), "--seeds", "1"]) == 0
    assert json.loads((out / "summary.json").read_text())["metrics"]["image_auroc"]["std"] is None
    assert "one seed: no standard deviation" in capsys.readouterr().out
    assert main(["summary", str(tmp_path / "nothing")]) == EXIT_ERROR
    assert "holds no seed-S run folder" in _error_line(capsys)
    assert main(["train", *SMALL, "--seed", "2", "--lr", "0.02", "--out",
                 str(out / "seed-2")]) == 0
    assert main(["summary", str(out)]) == EXIT_ERROR  # not the same run with another seed
    assert "seeds 0 and 2 differ in optimizer" in _error_line(capsys)


def test_the_stop_message_says_what_was_done(tmp_path: Path) -> None:
    error = Interrupted(signal.SIGTERM, "stopped by SIGTERM")
    assert "nothing was kept: run the same command again" in str(
        train_command._job_stopped(error, tmp_path / "absent", [0, 1], [], 0))
    during = train_command._job_stopped(error, tmp_path, [4, 5], [4], 5)
    assert during.signal_number == signal.SIGTERM
    assert str(during) == (f"stopped by SIGTERM. Seeds 4 5: finished 4; seed 5 was stopped. "
                           f"Continue the whole job (finished seeds are kept) with: flowkit "
                           f"train --out {tmp_path} --seeds 4 5 --resume")
    after = train_command._job_stopped(error, tmp_path, [4, 5], [4, 5], 5)
    assert "finished 4, 5; the summary was not written. Continue" in str(after)
