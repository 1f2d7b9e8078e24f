"""benchmarks.gpu without a GPU: its table writing and report from given measurements, and the
exit status on a machine without CUDA."""

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from benchmarks import gpu
from flowkit.kernels.dispatch_table import load_table, validated_row

ROOT = Path(__file__).resolve().parents[2]
INFO = {"device": "NVIDIA H200", "torch": "2.11.0", "triton": "3.6.0", "commit": "abc1234",
        "date": "2026-12-01 10:00 UTC", "python": "3.11"}
WIN = gpu.Measurement(
    family="pyramid", op="pyr_level", precision="float32", shape="2x16x256^2 pyramidflow",
    shape_class="pyramidflow:n<=2^22:fwd", pass_="fwd", error=3e-7, tolerance=2e-5,
    triton_ms=(0.05, 0.049, 0.052), reference_ms=(0.2, 0.19, 0.21), compiled_ms=None,
    work=2.5 * 2 * 16 * 256 * 256 * 4, unit="GB/s", peak=4000.0,
)
SLOW = replace(WIN, op="pyr_down", triton_ms=(0.3, 0.29, 0.31))
WRONG = replace(WIN, op="pyr_up", error=1e-2)
CONV = replace(WIN, family="conv", op="large_kernel_conv2d", precision="tf32",
               shape_class="c16-32:k7x7:px<=2^18:fwd", work=2e9, unit="TFLOP/s", peak=400.0,
               compiled_ms=None)


def test_measurement_verdicts() -> None:
    assert WIN.correct and WIN.speedup == pytest.approx(4.0)
    assert not WRONG.correct
    assert not replace(WIN, error=float("nan")).correct
    assert WIN.rate(0.05) == pytest.approx(WIN.work / 5e-5 / 1e9)


def test_tables_are_written_from_the_rows_that_won(tmp_path: Path) -> None:
    rows = gpu.table_rows([WIN, SLOW, WRONG, CONV], INFO, "9.0")
    assert set(rows) == {"pyramid", "conv"}
    written = gpu.write_tables(rows, tmp_path)
    assert sorted(p.name for p in written) == ["conv.json", "pyramid.json"]
    pyramid = load_table(tmp_path / "pyramid.json")
    assert len(pyramid) == 3
    assert validated_row(pyramid, "pyr_level", "9.0", "float32", WIN.shape_class) is not None
    assert validated_row(pyramid, "pyr_down", "9.0", "float32", WIN.shape_class) is None
    assert validated_row(pyramid, "pyr_up", "9.0", "float32", WIN.shape_class) is None
    assert validated_row(pyramid, "pyr_level", "8.0", "float32", WIN.shape_class) is None
    row = pyramid[[r.op for r in pyramid].index("pyr_level")]
    assert (row.device, row.torch, row.triton, row.date) == ("NVIDIA H200", "2.11.0", "3.6.0",
                                                             INFO["date"])
    # a second run replaces the rows of the keys it measured and keeps the others
    again = gpu.table_rows([replace(WIN, triton_ms=(0.4, 0.4, 0.4))], INFO, "9.0")
    gpu.write_tables(again, tmp_path)
    pyramid = load_table(tmp_path / "pyramid.json")
    assert len(pyramid) == 3
    assert validated_row(pyramid, "pyr_level", "9.0", "float32", WIN.shape_class) is None


def test_a_key_measured_at_several_shapes_wins_only_if_it_won_at_all() -> None:
    rows = gpu.table_rows([WIN, replace(WIN, shape="other", triton_ms=(0.3, 0.3, 0.3))],
                          INFO, "9.0")
    (row,) = rows["pyramid"]
    assert not row.wins and row.speedup < 1


def test_report_is_markdown_naming_the_device() -> None:
    text = gpu.format_report([WIN, WRONG, CONV], INFO, "9.0", {"copy GB/s": 4000.0})
    lines = text.splitlines()
    assert lines[0] == "### Triton kernels on NVIDIA H200 (sm 9.0)"
    table = [line for line in lines if line.startswith("| ")]
    assert len(table) == 4 and all(line.count("|") == 12 for line in table)
    assert "4.00x" in table[1] and " ok " in table[1] and "FAIL" in table[2]
    assert "TFLOP/s" in table[3]


def test_without_cuda_it_exits_2_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # as on a machine without a GPU, even on one
    result = subprocess.run([sys.executable, "-m", "benchmarks.gpu"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == gpu.NO_CUDA_MESSAGE and result.stdout == ""


def test_the_max_pool_tie_allowance_drops_isolated_outliers_only() -> None:
    expected = torch.zeros(100_000, dtype=torch.float64)  # 1e-5 of it: one element
    expected[0] = 1.0
    one_flip = expected.clone()
    one_flip[5] = 0.5
    two_flips = one_flip.clone()
    two_flips[7] = 0.5
    assert gpu._relative_error([one_flip], [expected]) == 0.5
    assert gpu._relative_error([one_flip], [expected], gpu.TIE_FRACTION) == 0.0
    assert gpu._relative_error([two_flips.float()], [expected], gpu.TIE_FRACTION) == 0.5
