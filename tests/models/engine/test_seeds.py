"""Several seeds of one run: the metrics' mean ± std against numpy, nested sections, metrics
missing from some seeds, and the job folder's rules."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from flowkit.models.engine.config import RunConfig
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.seeds import (
    SUMMARY_NAME,
    check_distinct,
    check_job_folder,
    check_same_settings,
    flatten_numbers,
    is_finished,
    job_seeds,
    metric_statistics,
    prepare_job_folder,
    seed_folder,
    seed_run_mode,
    summarize,
)
from flowkit.models.errors import ConfigError, RunFolderError

KEYS = st.text(st.characters(codec="ascii", exclude_characters="/"), min_size=1, max_size=6)
VALUES = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-10**6, 10**6)
SEEDS = st.lists(st.integers(0, 1000), min_size=1, max_size=6, unique=True)


def _records(seeds: list[int], layout: dict[str, Any], draw_value: Any) -> dict[int, dict]:
    """One record per seed with the same nested layout, fresh values drawn for each."""
    def fill(shape: dict[str, Any]) -> dict[str, Any]:
        return {key: fill(sub) if isinstance(sub, dict) else (draw_value() if sub else "text")
                for key, sub in shape.items()}
    return {seed: fill(layout) for seed in seeds}


LAYOUTS = st.recursive(
    st.dictionaries(KEYS, st.booleans(), min_size=1, max_size=4),  # True: a number, False: str
    lambda inner: st.dictionaries(KEYS, inner | st.booleans(), min_size=1, max_size=3),
    max_leaves=10,
)


def _leaves(layout: dict[str, Any], prefix: str = "") -> list[str]:
    """The paths of the numbers of a layout."""
    paths = []
    for key, sub in layout.items():
        if isinstance(sub, dict):
            paths += _leaves(sub, f"{prefix}{key}/")
        elif sub:
            paths.append(f"{prefix}{key}")
    return paths


@settings(max_examples=60, deadline=None)
@given(seeds=SEEDS, layout=LAYOUTS, data=st.data())
def test_mean_and_std_of_every_nested_number_match_numpy(
    seeds: list[int], layout: dict[str, Any], data: st.DataObject
) -> None:
    records = _records(seeds, layout, lambda: data.draw(VALUES))
    statistics = metric_statistics(records)
    assert list(statistics) == _leaves(layout)
    for path, entry in statistics.items():
        values = []
        for seed in seeds:
            value: Any = records[seed]
            for key in path.split("/"):
                value = value[key]
            values.append(float(value))
        assert entry["values"] == dict(zip(seeds, values, strict=True))
        assert entry["n"] == len(seeds)
        scale = max(1.0, *map(abs, values))
        assert entry["mean"] == pytest.approx(np.mean(values), rel=1e-12, abs=1e-12 * scale)
        if len(seeds) == 1:
            assert entry["std"] is None
        else:
            assert entry["std"] == pytest.approx(np.std(values, ddof=1), rel=1e-9,
                                                 abs=1e-9 * scale)


@settings(max_examples=30, deadline=None)
@given(seeds=st.lists(st.integers(0, 99), min_size=2, max_size=5, unique=True),
       layout=LAYOUTS, data=st.data())
def test_a_metric_missing_from_some_seeds_is_an_error_naming_them(
    seeds: list[int], layout: dict[str, Any], data: st.DataObject
) -> None:
    paths = _leaves(layout)
    assume(paths)
    records = _records(seeds, layout, lambda: data.draw(VALUES))
    path = data.draw(st.sampled_from(paths))
    lacking = data.draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=len(seeds) - 1,
                                 unique=True))
    for seed in lacking:
        section = records[seed]
        *parents, last = path.split("/")
        for key in parents:
            section = section[key]
        del section[last]
    named = ", ".join(str(seed) for seed in seeds if seed in lacking)
    with pytest.raises(ValueError, match=f"the metric {re.escape(path)} is in .* but not of "
                       f"seeds {named};"):
        metric_statistics(records)


def test_flatten_keeps_numbers_only_and_refuses_what_it_cannot_summarize() -> None:
    record = {"a": 1, "flag": True, "none": None, "list": [1, 2], "s": "x",
              "best": {"aupro_0.3": 0.5, "epoch": 2, "inner": {"b": -1.5}}}
    assert flatten_numbers(record) == {"a": 1.0, "best/aupro_0.3": 0.5, "best/epoch": 2.0,
                                       "best/inner/b": -1.5}
    with pytest.raises(ValueError, match="the metric best/x is nan"):
        flatten_numbers({"best": {"x": float("nan")}})
    with pytest.raises(ValueError, match="'a/b' holds '/'"):
        flatten_numbers({"a/b": 1.0})
    with pytest.raises(ValueError, match="no seed"):
        metric_statistics({})


def test_duplicate_seeds_are_refused() -> None:
    assert check_distinct([3, 1, 2]) == [3, 1, 2]
    with pytest.raises(ConfigError, match="lists 1, 2 more than once"):
        check_distinct([1, 2, 1, 2, 0])
    with pytest.raises(ConfigError, match="at least one seed"):
        check_distinct([])


def _write_run(out: Path, seed: int, metrics: dict[str, Any] | None,
               config: RunConfig | None = None) -> RunFolder:
    run = RunFolder.prepare(seed_folder(out, seed), RunMode.OVERWRITE)
    run.config.write_text(json.dumps(config.to_json() if config else {}))
    if metrics is not None:
        run.final_checkpoint.write_bytes(b"")
        run.metrics.write_text(json.dumps(metrics))
    return run


def test_summary_json_is_the_seeds_metrics(tmp_path: Path) -> None:
    out = tmp_path / "job"
    records = {0: {"auroc": 0.9, "best": {"auroc": 0.95}, "device": "cpu"},
               7: {"auroc": 0.7, "best": {"auroc": 0.85}, "device": "cpu"}}
    for seed, record in records.items():
        _write_run(out, seed, record)
    summary = summarize(out, [7, 0], {0: "cmd 0", 7: "cmd 7"})
    assert json.loads((out / SUMMARY_NAME).read_text()) == summary
    assert summary["seeds"] == [7, 0] and summary["n"] == 2
    assert summary["runs"] == {"7": {"folder": "seed-7", "command": "cmd 7"},
                               "0": {"folder": "seed-0", "command": "cmd 0"}}
    assert summary["metrics"]["auroc"]["values"] == {"7": 0.7, "0": 0.9}
    assert summary["metrics"]["best/auroc"]["mean"] == pytest.approx(0.9)
    assert summary["metrics"]["best/auroc"]["std"] == pytest.approx(np.std([0.95, 0.85], ddof=1))
    assert set(summary["metrics"]) == {"auroc", "best/auroc"}
    del records[7]["best"]
    _write_run(out, 7, records[7])
    with pytest.raises(RunFolderError, match="best/auroc is in .* seeds 0 but not of seeds 7"):
        summarize(out, [0, 7])
    with pytest.raises(RunFolderError, match="missing .*seed-3/metrics.json"):
        summarize(out, [0, 3])


def test_job_folder_rules(tmp_path: Path, tiny_config: RunConfig) -> None:
    out = tmp_path / "job"
    check_job_folder(out, RunMode.NEW)
    check_job_folder(out, RunMode.OVERWRITE)
    with pytest.raises(RunFolderError, match="holds no seed-S run; drop --resume"):
        check_job_folder(out, RunMode.RESUME)
    out.mkdir()
    with pytest.raises(RunFolderError, match="it is empty: pass --overwrite"):
        check_job_folder(out, RunMode.NEW)
    with pytest.raises(RunFolderError, match="pass --overwrite instead of --resume"):
        check_job_folder(out, RunMode.RESUME)
    run = _write_run(out, 2, None, tiny_config)
    assert job_seeds(out) == [2]
    with pytest.raises(RunFolderError, match="exists; pass --resume to continue the job"):
        check_job_folder(out, RunMode.NEW)
    check_job_folder(out, RunMode.RESUME)
    assert seed_run_mode(run.root, RunMode.RESUME) is RunMode.RESUME
    assert seed_run_mode(seed_folder(out, 5), RunMode.RESUME) is RunMode.NEW
    assert seed_run_mode(seed_folder(out, 5), RunMode.OVERWRITE) is RunMode.OVERWRITE
    (out / "notes.txt").write_text("mine")
    for mode in RunMode:
        with pytest.raises(RunFolderError, match="not a multi-seed job folder"):
            prepare_job_folder(out, mode)
    assert (out / "notes.txt").read_text() == "mine" and run.config.is_file()
    (out / "notes.txt").unlink()
    (seed_folder(out, 4)).mkdir()
    (seed_folder(out, 4) / "thesis.tex").write_text("years")
    with pytest.raises(RunFolderError, match="seed-4: it is not a flowkit run folder"):
        prepare_job_folder(out, RunMode.OVERWRITE)
    (seed_folder(out, 4) / "thesis.tex").unlink()
    prepare_job_folder(out, RunMode.OVERWRITE)
    assert list(out.iterdir()) == []
    single = tmp_path / "single"
    RunFolder.prepare(single, RunMode.NEW).config.write_text("{}")
    with pytest.raises(RunFolderError, match="holds a single run"):
        check_job_folder(single, RunMode.NEW)


def test_finished_means_metrics_for_these_epochs_newer_than_every_checkpoint(
    tmp_path: Path, tiny_config: RunConfig
) -> None:
    run = _write_run(tmp_path, 0, {"auroc": 0.5}, tiny_config)
    assert is_finished(run, tiny_config)
    assert not is_finished(run, dataclasses.replace(tiny_config, epochs=tiny_config.epochs + 1))
    run.last_checkpoint.write_bytes(b"later")  # an extension that was stopped
    assert not is_finished(run, tiny_config)
    run.metrics.write_text("{}")
    assert is_finished(run, tiny_config)
    run.final_checkpoint.unlink()
    assert not is_finished(run, tiny_config)


def test_seeds_must_share_every_other_setting(tiny_config: RunConfig) -> None:
    configs = {seed: dataclasses.replace(tiny_config, seed=seed) for seed in (0, 1, 2)}
    check_same_settings(configs)
    configs[2] = dataclasses.replace(configs[2], epochs=5)
    with pytest.raises(ConfigError, match="seeds 0 and 2 differ in epochs .*pass --epochs 5"):
        check_same_settings(configs)
    configs[2] = dataclasses.replace(configs[2], epochs=tiny_config.epochs, batch_size=2)
    with pytest.raises(ConfigError, match="differ in batch_size .*--overwrite"):
        check_same_settings(configs)
