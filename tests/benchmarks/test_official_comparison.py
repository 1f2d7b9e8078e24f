"""benchmarks/official_comparison: the rows come from the runs' own files, the mean over
categories is each seed's mean then the mean ± std over seeds, and mismatched runs are
refused."""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.common import write_json
from benchmarks.official_comparison import METRICS, ROWS, comparison, main, official_runs
from benchmarks.parity_official import OursSide, alone_record, run_alone, synthetic_data
from flowkit.models.cli import main as flowkit_main
from flowkit.models.pyramidflow import PyramidFlow
from tests.models.threads import one_thread

SMALL = ["--category", "nut", "--image-size", "32", "--channels", "4", "--levels", "3",
         "--num-stack", "1", "--kernel-size", "3"]


def _runs(values: np.ndarray, categories: list[str], seeds: list[int]):
    """``values[row, category, seed, metric]`` as the ``Runs`` mapping."""
    return {category: {row: {seed: {m: float(values[r, c, s, k]) for k, m in enumerate(METRICS)}
                             for s, seed in enumerate(seeds)}
                       for r, row in enumerate(ROWS)}
            for c, category in enumerate(categories)}


@settings(max_examples=25)
@given(categories=st.integers(1, 4), seeds=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_cells_are_means_over_seeds_and_the_mean_row_is_per_seed_first(categories, seeds,
                                                                       seed) -> None:
    values = np.random.default_rng(seed).uniform(0.5, 1.0, (len(ROWS), categories, seeds,
                                                            len(METRICS)))
    names = [f"c{i}" for i in range(categories)]
    table = comparison(_runs(values, names, list(range(10, 10 + seeds))))
    assert list(table) == [*names, "mean over categories"]
    ddof = 1 if seeds > 1 else 0
    per_seed = values.mean(axis=1)  # [row, seed, metric]
    for r, row in enumerate(ROWS):
        for k, metric in enumerate(METRICS):
            for c, name in enumerate(names):
                mean, std = table[name][row][metric]
                assert math.isclose(mean, values[r, c, :, k].mean(), rel_tol=1e-12)
                assert (std is None) == (seeds == 1)
                if std is not None:
                    assert math.isclose(std, values[r, c, :, k].std(ddof=ddof), rel_tol=1e-9)
            mean, std = table["mean over categories"][row][metric]
            assert math.isclose(mean, per_seed[r, :, k].mean(), rel_tol=1e-12)
            if std is not None:
                assert math.isclose(std, per_seed[r, :, k].std(ddof=ddof), rel_tol=1e-9,
                                    abs_tol=1e-15)


def test_mismatched_runs_are_refused() -> None:
    values = np.full((len(ROWS), 2, 2, len(METRICS)), 0.9)
    runs = _runs(values, ["a", "b"], [0, 1])
    del runs["b"][ROWS[3]][1]
    with pytest.raises(ValueError, match="different seeds"):
        comparison(runs)
    for row in (ROWS[0], ROWS[2], ROWS[3]):
        runs = _runs(values, ["a", "b"], [0, 1])
        del runs["a"][row]
        with pytest.raises(ValueError, match=f"a has no {row}"):
            comparison(runs)


def test_a_category_without_validation_has_no_best_row_nor_the_mean_over_categories() -> None:
    values = np.random.default_rng(0).uniform(0.5, 1.0, (len(ROWS), 2, 2, len(METRICS)))
    runs = _runs(values, ["a", "b"], [0, 1])
    del runs["a"][ROWS[1]]
    table = comparison(runs)
    assert list(table["a"]) == [ROWS[0], ROWS[2], ROWS[3]]
    assert list(table["b"]) == list(ROWS)
    assert list(table["mean over categories"]) == [ROWS[0], ROWS[2], ROWS[3]]
    assert table["mean over categories"][ROWS[0]]["aupro_0.3"][0] == pytest.approx(
        values[0, :, :, 2].mean(), rel=1e-12)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], dict]:
    """A finished ``flowkit train --seeds 0 1`` job (a small PyramidFlow, with validation) and two
    official-format files of the same category and size (our model trained alone, recorded as
    ``--mode official`` records)."""
    folder = tmp_path_factory.mktemp("comparison")
    out = folder / "ours"
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        assert flowkit_main(["train", "--model", "pyramidflow", *SMALL, "--epochs", "3",
                             "--seeds", "0", "1", "--out", str(out), "--quiet"]) == 0
    train, test, masks = synthetic_data("nut", 32, num_train=6)
    paths, reports = [], {}
    for seed in (0, 1):
        torch.manual_seed(seed)
        side = OursSide(PyramidFlow(encoder="none", channels=4, levels=3, num_stack=1,
                                    kernel_size=3, image_size=32), name="official")
        with one_thread():
            report = run_alone(side, "official", train, test, masks, steps=3, batch_size=2,
                               seed=seed, eval_every=1)
        paths.append(folder / f"official-{seed}.json")
        write_json(paths[-1], [alone_record(report, seed=seed, data_seed=0, category="nut",
                                            image_size=32)])
        reports[seed] = report
    return out, paths, reports


def test_the_table_reads_each_row_from_its_runs(files, capsys) -> None:
    out, paths, reports = files
    table = main(["--ours", str(out), "--official", *map(str, paths)])
    printed = capsys.readouterr().out
    assert f"{ROWS[1]} minus {ROWS[3]}, mean over categories:" in printed
    assert f"ours, nut: {out} (--epochs 3 --val-fraction 0.1 --augment auto)" in printed
    summary = json.loads((out / "summary.json").read_text())["metrics"]
    assert any(reports[s].metrics != {m: v["value"] for m, v in reports[s].test_maxima().items()}
               for s in (0, 1)), "the fixture's last and best evaluations must differ somewhere"
    assert any(summary[m]["values"] != summary[f"best/{m}"]["values"] for m in METRICS), \
        "the fixture's final and best-on-validation models must differ somewhere"
    for metric in METRICS:
        assert table["nut"][ROWS[0]][metric] == (summary[metric]["mean"], summary[metric]["std"])
        best = summary[f"best/{metric}"]
        assert table["nut"][ROWS[1]][metric] == pytest.approx((best["mean"], best["std"]),
                                                              rel=1e-12)
        last = [reports[s].metrics[metric] for s in (0, 1)]
        maxima = [max(point["metrics"]["official"][metric] for point in reports[s].curve)
                  for s in (0, 1)]
        for row, values in ((ROWS[2], last), (ROWS[3], maxima)):
            mean, std = table["nut"][row][metric]
            assert mean == pytest.approx(np.mean(values), rel=1e-12)
            assert std == pytest.approx(np.std(values, ddof=1), rel=1e-9, abs=1e-15)
    for row in ROWS:  # one category: its mean over categories is its own row
        for metric in METRICS:
            assert table["mean over categories"][row][metric] == pytest.approx(
                table["nut"][row][metric], rel=1e-12)


def test_a_job_without_validation_compares_its_final_model(files, tmp_path, capsys) -> None:
    _, paths, _ = files
    job = tmp_path / "no-validation"
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        assert flowkit_main(["train", "--model", "pyramidflow", *SMALL, "--epochs", "1",
                             "--val-fraction", "0", "--augment", "on", "--seeds", "0", "1",
                             "--out", str(job), "--quiet"]) == 0
    table = main(["--ours", str(job), "--official", *map(str, paths)])
    printed = capsys.readouterr().out
    assert f"ours, nut: {job} (--epochs 1 --val-fraction 0.0 --augment on)" in printed
    assert list(table["nut"]) == list(table["mean over categories"]) == [ROWS[0], ROWS[2],
                                                                        ROWS[3]]
    assert f"{ROWS[0]} minus {ROWS[3]}, mean over categories:" in printed
    summary = json.loads((job / "summary.json").read_text())["metrics"]
    assert table["nut"][ROWS[0]]["aupro_0.3"] == (summary["aupro_0.3"]["mean"],
                                                  summary["aupro_0.3"]["std"])


def test_official_up_to_keeps_the_evaluations_before_the_step(files) -> None:
    _, paths, reports = files
    for up_to in (1, 2, 3):
        _, runs = official_runs(paths, up_to=up_to)
        for seed, report in reports.items():
            curve = [point["metrics"]["official"] for point in report.curve[:up_to]]
            assert runs["nut"][ROWS[2]][seed] == {m: curve[-1][m] for m in METRICS}
            assert runs["nut"][ROWS[3]][seed] == {m: max(p[m] for p in curve) for m in METRICS}
    with pytest.raises(ValueError, match="no evaluation at or before step 0"):
        official_runs(paths, up_to=0)


def test_files_that_do_not_match_are_refused(files, tmp_path, capsys) -> None:
    out, paths, _ = files
    with pytest.raises(ValueError, match="a second file of nut seed 0"):
        official_runs([paths[0], paths[0]])
    record = json.loads(paths[0].read_text())["rows"][0]
    for change, message in (({"image_size": 64}, "differ in image size"),
                            ({"category": "grass"}, "grass has no ours"),
                            ({"data_seed": 1}, "other synthetic images")):
        changed = tmp_path / "changed.json"
        write_json(changed, [{**record, **change}])
        with pytest.raises(SystemExit, match=message):
            main(["--ours", str(out), "--official", str(changed), str(paths[1])]
                 if "image_size" not in change else
                 ["--ours", str(out), "--official", str(changed)])
    job = tmp_path / "baseline"
    with one_thread(), contextlib.redirect_stdout(io.StringIO()):
        assert flowkit_main(["train", "--model", "baseline", "--category", "nut", "--image-size",
                             "32", "--seeds", "0", "--out", str(job), "--quiet"]) == 0
    with pytest.raises(SystemExit, match="a job of 'baseline'"):
        main(["--ours", str(job), "--official", str(paths[0])])
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(out, elsewhere)
    for seed in (0, 1):
        config = elsewhere / f"seed-{seed}" / "config.json"
        saved = json.loads(config.read_text())
        saved["data"].update(source="mvtec", root=str(tmp_path))
        config.write_text(json.dumps(saved))
    with pytest.raises(SystemExit, match="trained on --data mvtec"):
        main(["--ours", str(elsewhere), "--official", str(paths[0])])
    parity = tmp_path / "parity.json"
    write_json(parity, [{**record, "mode": "defaults"}])
    with pytest.raises(ValueError, match="no --mode official run"):
        official_runs([parity])
    with pytest.raises(SystemExit, match="summary.json is missing"):
        main(["--ours", str(tmp_path), "--official", str(paths[0])])
    with pytest.raises(SystemExit, match="two --ours jobs of nut"):
        main(["--ours", str(out), str(out), "--official", str(paths[0])])
