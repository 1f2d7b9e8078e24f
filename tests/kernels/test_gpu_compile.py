"""Every kernel configuration the launchers can choose compiles for sm_80 and sm_90 on the CPU
(Triton's bundled ptxas) without register spills; the registers and shared memory are reported.

One compile per configuration and target (two processes, one per target, run side by side);
the interpreter's ``TRITON_INTERPRET=1`` is removed for them, as it compiles nothing.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.kernels.gpu_compile import CAPABILITIES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> list[dict]:
    """The results of ``python -m flowkit.kernels.gpu_compile`` for every capability."""
    folder = tmp_path_factory.mktemp("gpu_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    runs = {
        cap: subprocess.Popen(
            [sys.executable, "-m", "flowkit.kernels.gpu_compile", "--capabilities", str(cap),
             "--json", str(folder / f"{cap}.json")],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cap in CAPABILITIES
    }
    results = []
    for cap, run in runs.items():
        stdout, stderr = run.communicate(timeout=1800)
        path = folder / f"{cap}.json"
        assert path.exists(), f"sm_{cap}: no results\n{stdout[-2000:]}\n{stderr[-3000:]}"
        results += json.loads(path.read_text())
        print(stdout)  # the table, for the CI log
    return results


def test_every_launch_compiles_for_every_target(compiled: list[dict]) -> None:
    by_label: dict[str, set[int]] = {}
    for row in compiled:
        by_label.setdefault(row["label"], set()).add(row["capability"])
    kernels = {row["launch"]["kernel"] for row in compiled}
    assert kernels == {"_conv_fwd_kernel", "_conv_wgrad_kernel", "_coupling_fwd_kernel",
                       "_coupling_bwd_kernel", "_separable_kernel", "_maxpool_down_fwd_kernel",
                       "_maxpool_down_bwd_kernel"}
    assert all(caps == set(CAPABILITIES) for caps in by_label.values())


def test_no_configuration_spills(compiled: list[dict]) -> None:
    spilling = [f"sm_{r['capability']} {r['label']}: {r['registers']} registers, "
                f"{r['spill_bytes']} B local" for r in compiled if r["spill_bytes"]]
    assert not spilling, "\n".join(spilling)
    assert all(0 < r["registers"] <= 255 for r in compiled)
    assert all(r["shared_bytes"] <= 227 * 1024 for r in compiled)  # sm_90's per-block limit
