"""The ``flowkit`` entry point: the help starts without PyTorch, the package's names resolve
on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import flowkit

REPO = Path(__file__).resolve().parents[3]
_PROBE = (
    "import sys, contextlib, io\n"
    "from flowkit.models.cli import main\n"
    "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
    "    try:\n"
    "        code = main(['--help'])\n"
    "    except SystemExit as exited:\n"
    "        code = exited.code\n"
    "assert code == 0 and 'train' in out.getvalue(), (code, out.getvalue())\n"
    "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'numpy', 'skimage'})\n"
    "print(','.join(heavy))\n"
)


def test_the_help_starts_without_torch(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_every_public_name_of_flowkit_resolves() -> None:
    for name in flowkit.__all__:
        assert getattr(flowkit, name) is not None, name
    assert set(dir(flowkit)) >= set(flowkit.__all__)
