"""Benchmark of the Laplacian-pyramid ops: Triton vs the eager and compiled references.

For each op alone (``pyr_down``, ``pyr_up``, ``pyr_level``, ``pyr_level_inverse``) and a 4-level
decomposition + recomposition (``level4``: three ``pyr_level`` then three ``pyr_level_inverse``),
in both modes, forward and forward+backward, it times

* ``triton``: the public ops on CUDA (the ``flowkit::pyr_*`` custom ops and their kernels);
* ``eager``: the plain-PyTorch references (the ones the tests check against);
* ``compiled``: ``torch.compile`` of the references;

with ``triton.testing.do_bench`` (median, p20, p80 in ms) on CUDA. GB/s counts the bytes an op
must move at least once: every input and output map of every op in the chain (and, with the
backward, every gradient map); ``%copy`` is that rate over the copy bandwidth measured here with
a large tensor copy.

Without CUDA it says so and times only the eager references, at small sizes by default (well
under a minute on 2 cores); ``--full`` runs the full grid (sizes 256..2048, channels 3..64,
batch 1..16, float32 and bfloat16), skipping configurations over ``--max-gib`` per map.

Usage::

    python -m benchmarks.pyramid --out pyramid.json [--full]
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from flowkit.kernels.pyramid import (
    PyramidMode,
    pyr_down,
    pyr_down_reference,
    pyr_down_size,
    pyr_level,
    pyr_level_inverse,
    pyr_level_inverse_reference,
    pyr_level_reference,
    pyr_up,
    pyr_up_reference,
)

from .common import print_table, stamp, time_call, write_json

LEVELS = 4
OPS = ("level4", "pyr_down", "pyr_up", "pyr_level", "pyr_level_inverse")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CPU_GRID = {"sizes": [64, 256], "channels": [3, 16], "batch": [1, 2], "dtypes": ["float32"]}
CUDA_GRID = {"sizes": [256, 1024, 2048], "channels": [16], "batch": [2],
             "dtypes": ["float32", "bfloat16"]}
FULL_GRID = {"sizes": [256, 512, 1024, 2048], "channels": [3, 16, 64], "batch": [1, 4, 16],
             "dtypes": ["float32", "bfloat16"]}
COLUMNS = ["op", "mode", "pass", "impl", "dtype", "batch", "channels", "size", "median_ms",
           "p20_ms", "p80_ms", "GB/s", "%copy"]


@dataclass(frozen=True)
class Ops:
    """One implementation of the four pyramid ops."""

    down: Callable
    up: Callable
    level: Callable
    inverse: Callable


TRITON = Ops(pyr_down, pyr_up, pyr_level, pyr_level_inverse)
REFERENCE = Ops(pyr_down_reference, pyr_up_reference, pyr_level_reference,
                pyr_level_inverse_reference)


def bench(fn: Callable[[], object]) -> dict[str, float]:
    """Median, p20 and p80 of ``fn`` in ms: ``do_bench`` on CUDA, a wall clock on CPU."""
    if torch.cuda.is_available():
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8])
        return {"median": median, "p20": p20, "p80": p80}
    return {key: 1e3 * value for key, value in time_call(fn, repeats=7, warmup=2).items()}


def copy_bandwidth_gbps(device: torch.device) -> float:
    """Measured copy bandwidth (read + write bytes per second) of a large tensor copy."""
    n = (1 << 28) if device.type == "cuda" else (1 << 25)
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    median_ms = bench(lambda: dst.copy_(src))["median"]
    return 2 * src.numel() * src.element_size() / (median_ms * 1e-3) / 1e9


def level4(ops: Ops, x: torch.Tensor, mode: PyramidMode) -> torch.Tensor:
    """Decompose into ``LEVELS`` levels and recompose: returns ``x`` rebuilt."""
    residuals, coarse = [], x
    for _ in range(LEVELS - 1):
        residual, coarse = ops.level(coarse, mode)
        residuals.append(residual)
    for residual in reversed(residuals):
        coarse = ops.inverse(residual, coarse, mode)
    return coarse


def _nbytes(shape: tuple[int, ...], dtype: torch.dtype) -> int:
    return torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()


def case(op: str, ops: Ops, x: torch.Tensor, mode: PyramidMode):
    """``(fn, inputs, bytes)``: a closure running ``op`` on maps derived from ``x``, the maps it
    differentiates, and the bytes of all maps its ops read and write (forward only)."""
    n, c, height, width = x.shape
    coarse_size = pyr_down_size(height, width, mode)
    down = torch.randn(n, c, *coarse_size, dtype=x.dtype, device=x.device)
    fine, small = _nbytes(x.shape, x.dtype), _nbytes(down.shape, x.dtype)
    if op == "pyr_down":
        return (lambda: ops.down(x, mode)), [x], fine + small
    if op == "pyr_up":
        return (lambda: ops.up(down, (height, width), mode)), [down], small + fine
    if op == "pyr_level":
        return (lambda: ops.level(x, mode)), [x], 2 * fine + small
    if op == "pyr_level_inverse":
        return (lambda: ops.inverse(x, down, mode)), [x, down], 2 * fine + small
    total, size = 0, (height, width)
    for _ in range(LEVELS - 1):  # each level: pyr_level then, on the way back, its inverse
        coarse = pyr_down_size(*size, mode)
        total += 2 * (2 * _nbytes((n, c, *size), x.dtype) + _nbytes((n, c, *coarse), x.dtype))
        size = coarse
    return (lambda: level4(ops, x, mode)), [x], total


def with_backward(fn: Callable, inputs: list[torch.Tensor]) -> Callable[[], None]:
    """``fn`` followed by the backward of all its outputs (gradients of ones)."""
    for t in inputs:
        t.requires_grad_(True)

    def step() -> None:
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        for t in inputs:
            t.grad = None

    return step


def implementations(device: torch.device) -> dict[str, Ops]:
    """``triton``, ``eager`` and ``compiled`` on CUDA; only ``eager`` elsewhere."""
    if device.type != "cuda":
        return {"eager": REFERENCE}
    compiled = Ops(*(torch.compile(f) for f in (pyr_down_reference, pyr_up_reference,
                                                 pyr_level_reference,
                                                 pyr_level_inverse_reference)))
    return {"triton": TRITON, "eager": REFERENCE, "compiled": compiled}


def run(grid: dict, modes: list[PyramidMode], ops: list[str], max_gib: float) -> list[dict]:
    """Time every configuration of ``grid``; one row per (op, mode, pass, impl, shape)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    copy_gbps = copy_bandwidth_gbps(device)
    print(f"copy bandwidth: {copy_gbps:.1f} GB/s")
    impls = implementations(device)
    rows = []
    for dtype_name, batch, channels, size in itertools.product(
            grid["dtypes"], grid["batch"], grid["channels"], grid["sizes"]):
        dtype = DTYPES[dtype_name]
        if _nbytes((batch, channels, size, size), dtype) > max_gib * 2**30:
            print(f"skipped {dtype_name} {batch}x{channels}x{size}^2: over {max_gib} GiB")
            continue
        x = torch.randn(batch, channels, size, size, device=device).to(dtype)
        for op, mode, (impl, impl_ops), backward in itertools.product(
                ops, modes, impls.items(), (False, True)):
            fn, inputs, nbytes = case(op, impl_ops, x.detach().clone(), mode)
            if backward:
                fn, nbytes = with_backward(fn, inputs), 2 * nbytes
            times = bench(fn)
            gbps = nbytes / (times["median"] * 1e-3) / 1e9
            rows.append({
                "op": op, "mode": mode.value, "pass": "fwd+bwd" if backward else "fwd",
                "impl": impl, "dtype": dtype_name, "batch": batch, "channels": channels,
                "size": size, "median_ms": round(times["median"], 4),
                "p20_ms": round(times["p20"], 4), "p80_ms": round(times["p80"], 4),
                "GB/s": round(gbps, 2), "%copy": round(100 * gbps / copy_gbps, 1),
                "copy_GB/s": round(copy_gbps, 1),
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the rows and stamp as JSON here")
    parser.add_argument("--full", action="store_true", help="the full grid (GPU-sized)")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--channels", type=int, nargs="+")
    parser.add_argument("--batch", type=int, nargs="+")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES))
    parser.add_argument("--modes", nargs="+", choices=[m.value for m in PyramidMode],
                        default=[m.value for m in PyramidMode])
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    parser.add_argument("--max-gib", type=float, default=2.0,
                        help="skip shapes whose input map is larger (GiB)")
    args = parser.parse_args(argv)

    info = stamp()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    if not torch.cuda.is_available():
        print("No CUDA device: timing the eager references only (no Triton, no torch.compile).")
    grid = dict(FULL_GRID if args.full else CUDA_GRID if torch.cuda.is_available() else CPU_GRID)
    for key in ("sizes", "channels", "batch", "dtypes"):
        grid[key] = getattr(args, key) or grid[key]
    rows = run(grid, [PyramidMode(m) for m in args.modes], args.ops, args.max_gib)
    print_table(rows, COLUMNS)
    if args.out:
        write_json(args.out, rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
