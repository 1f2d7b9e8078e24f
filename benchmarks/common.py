"""What every benchmark shares: the stamp of where it ran, timing statistics, table output."""

from __future__ import annotations

import datetime
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = [
    "describe_device",
    "peak_rss_bytes",
    "print_table",
    "run_isolated",
    "stamp",
    "time_call",
    "write_json",
]


def describe_device() -> str:
    """The GPU's name, or the CPU's with its core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def stamp() -> dict[str, str]:
    """Device, library versions, git commit and date, recorded with every result."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, check=False,
        ).stdout.strip() or "unknown"
    except OSError:
        commit = "unknown"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    return {
        "device": describe_device(),
        "torch": torch.__version__,
        "triton": triton_version,
        "python": platform.python_version(),
        "commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def time_call(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> dict[str, float]:
    """Seconds per call of ``fn``: median, p20 and p80 over ``repeats``.

    On CUDA each call is timed with CUDA events (device time, no host sync inside the call);
    on the CPU with ``time.perf_counter``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            begin = time.perf_counter()
            fn()
            times.append(time.perf_counter() - begin)
    if len(times) == 1:
        return {"median": times[0], "p20": times[0], "p80": times[0]}
    quantiles = statistics.quantiles(times, n=5, method="inclusive")
    return {"median": statistics.median(times), "p20": quantiles[0], "p80": quantiles[3]}


def print_table(rows: Sequence[dict], columns: Sequence[str]) -> None:
    """Print rows as an aligned Markdown table."""
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) + " |")


def write_json(path: str | Path, rows: Sequence[dict]) -> None:
    """Write the rows with the stamp as JSON."""
    Path(path).write_text(json.dumps({"stamp": stamp(), "rows": list(rows)}, indent=2))


def peak_rss_bytes() -> int:
    """The peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_isolated(module: str, args: Sequence[str]) -> dict:
    """Run ``python -m module *args`` in a fresh process and parse its last line as JSON.

    A fresh process per configuration makes its peak RSS its own.
    """
    command = [sys.executable, "-m", module, *args]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
