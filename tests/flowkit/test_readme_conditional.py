"""README's conditional-flow example runs, and trains its encoder through the context."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_conditional_example_runs_and_inverts() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = [b for b in blocks if "context_channels" in b and "memory_saving=True" in b]
    assert len(example) == 1, "README's conditional example is missing"
    namespace: dict = {}
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(example[0], "README.md", "exec"), namespace)
    encoder = namespace["encoder"]
    assert encoder.weight.grad is not None and float(encoder.weight.grad.abs().max()) > 0
    error = float(re.search(r"inverse error (\S+)", output.getvalue()).group(1))
    assert error < 1e-4
