"""A plain (non-editable) install carries all three parts under the one ``flowkit`` namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_plain_install_has_kernels_models_and_the_console_script(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(ROOT)],
        check=True, capture_output=True, text=True, cwd=tmp_path,
    )
    assert (target / "bin" / "flowkit").exists()
    probe = (
        "import flowkit, flowkit.kernels.pyramid, flowkit.models.pyramidflow, "
        "flowkit.models.csflow, flowkit.models.cli; print(flowkit.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, cwd=tmp_path, env=env).stdout
    assert out.strip() == str(target / "flowkit" / "__init__.py")
