"""The documentation runs: README's example, every docstring example, and ruff's lint."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import flowkit

ROOT = Path(__file__).resolve().parents[1]


def _modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(flowkit.__path__, "flowkit."):
        names.append(info.name)
    for sub in ("flowkit.kernels", "flowkit.models"):
        package = importlib.import_module(sub)
        names += [sub] + [i.name for i in pkgutil.walk_packages(package.__path__, sub + ".")]
    return sorted(n for n in set(names) if not n.endswith("__main__"))


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_readme_example_is_the_example_script_and_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    script = (ROOT / "examples" / "multiscale_flow.py").read_text()
    block = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    assert block.strip() in script, "README's example and examples/multiscale_flow.py diverged"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "multiscale_flow.py")],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "logdet == log|det J| [eval]" in result.stdout
    assert "nats/dim after 20 steps" in result.stdout


def test_ruff_lint_is_clean() -> None:
    ruff = shutil.which("ruff")
    assert ruff, "ruff is missing: pip install -e '.[test]'"
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
