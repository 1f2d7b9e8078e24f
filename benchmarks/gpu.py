"""One command to validate and tune the Triton kernels on a GPU: ``python -m benchmarks.gpu``.

On a CUDA device (sized to fit in 10 minutes on an H100/H200; not yet run on one), it

1. measures the device's copy bandwidth and matmul peaks (float32, TF32, bfloat16);
2. for every op family (pyramid, coupling, conv), precision and PyramidFlow-like shape (256 and
   1024 px, several tiles along every grid axis), runs Triton (forced) and the reference (eager
   PyTorch / cuDNN) on the same inputs, checks Triton's outputs and gradients against a float64
   reference with per-precision tolerances (the TF32 and bf16 ``tl.dot`` paths that the CPU
   interpreter never runs included), and times Triton, the reference and ``torch.compile`` of the
   reference with CUDA events (median, p20, p80; GB/s or TFLOP/s and the fraction of the
   measured peak);
3. writes the dispatch tables (``kernels/dispatch_tables/*.json``) from what won: a row per
   measured key, ``correct`` and ``speedup`` = reference median / Triton median;
4. runs ``benchmarks.pyramidflow_step`` at 256 and 1024 px with and without memory saving (peak
   memory by ``torch.cuda.max_memory_allocated``), now dispatching by the new tables;
5. prints markdown for ``benchmarks/RESULTS.md``, the device named.

Without CUDA it exits with status 2 and a one-line message. ``--quick`` runs one size per op
(for a first look), ``--no-write`` leaves the tables alone, ``--out FILE.json`` keeps the rows.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from flowkit.kernels import use_kernels
from flowkit.kernels.dispatch_table import (
    TABLE_DIR,
    OpFamily,
    ValidationRow,
    family_rows,
    load_table,
    merge_rows,
    write_table,
)

from .common import print_table, run_isolated, stamp, time_call

__all__ = [
    "TOLERANCE",
    "Measurement",
    "format_report",
    "main",
    "table_rows",
    "write_tables",
]

TOLERANCE = {
    "float64": 1e-12, "float32": 2e-5, "tf32": 5e-3, "float16": 4e-3, "bfloat16": 3e-2,
}
"""Largest accepted error relative to the reference's largest magnitude, per precision."""

NO_CUDA_MESSAGE = ("benchmarks.gpu needs a CUDA device (none is visible to torch); run it on a "
                   "GPU machine: python -m benchmarks.gpu")


@dataclass(frozen=True)
class Measurement:
    """One op, precision, shape and pass, timed and checked on the GPU.

    Times are milliseconds (median, p20, p80) of Triton, the reference and (where it applies)
    ``torch.compile`` of the reference; ``work`` is bytes moved (``unit`` GB/s) or FLOPs
    (``unit`` TFLOP/s) of one call, ``peak`` the measured device peak in that unit.
    """

    family: str
    op: str
    precision: str
    shape: str
    shape_class: str
    pass_: str
    error: float
    tolerance: float
    triton_ms: tuple[float, float, float]
    reference_ms: tuple[float, float, float]
    compiled_ms: tuple[float, float, float] | None
    work: float
    unit: str
    peak: float

    @property
    def correct(self) -> bool:
        return math.isfinite(self.error) and self.error <= self.tolerance

    @property
    def speedup(self) -> float:
        """Reference median over Triton median."""
        return self.reference_ms[0] / self.triton_ms[0]

    def rate(self, ms: float) -> float:
        """GB/s or TFLOP/s at ``ms`` per call."""
        return self.work / (ms * 1e-3) / (1e9 if self.unit == "GB/s" else 1e12)


def table_rows(measurements: Sequence[Measurement], info: dict[str, str],
               capability: str) -> dict[str, list[ValidationRow]]:
    """The dispatch-table rows of each family from measurements on one device.

    Args:
        measurements: what was measured.
        info: :func:`benchmarks.common.stamp` of the run (device, torch, triton, date).
        capability: ``"major.minor"`` of the device.

    Returns:
        ``{family: rows}``, one row per measured key (the fastest kept if a key repeats: shapes
        of one size class).
    """
    out: dict[str, dict[tuple, ValidationRow]] = {}
    for m in measurements:
        row = ValidationRow(
            op=m.op, device=info["device"], capability=capability, precision=m.precision,
            shape_class=m.shape_class, torch=info["torch"], triton=info["triton"],
            date=info["date"], correct=m.correct, speedup=round(m.speedup, 3),
        )
        rows = out.setdefault(m.family, {})
        old = rows.get(row.key)
        # a key that covers several measured shapes wins only if it won at all of them
        if old is not None:
            row = replace(row, correct=old.correct and row.correct,
                          speedup=min(old.speedup, row.speedup))
        rows[row.key] = row
    return {family: list(rows.values()) for family, rows in out.items()}


def write_tables(rows: dict[str, list[ValidationRow]], directory: Path = TABLE_DIR) -> list[Path]:
    """Merge ``rows`` into each family's table file (a measured key replaces its old row).

    Raises:
        DispatchTableError: if an existing table is malformed (fix or delete it first).
    """
    written = []
    for family, new in sorted(rows.items()):
        path = Path(directory) / f"{OpFamily(family).value}.json"
        old = load_table(path) if path.exists() else ()
        write_table(path, merge_rows(old, new))
        written.append(path)
    family_rows.cache_clear()
    return written


def _fmt(ms: tuple[float, float, float] | None) -> str:
    return "-" if ms is None else f"{ms[0]:.3f} ({ms[1]:.3f}-{ms[2]:.3f})"


def format_report(measurements: Sequence[Measurement], info: dict[str, str], capability: str,
                  peaks: dict[str, float]) -> str:
    """Markdown for ``benchmarks/RESULTS.md``: the stamp, the peaks and one row per measurement.

    Example:
        >>> text = format_report([], {"device": "GPU X", "torch": "2.11", "triton": "3.6",
        ...                           "commit": "abc", "date": "today"}, "9.0", {})
        >>> text.splitlines()[0]
        '### Triton kernels on GPU X (sm 9.0)'
    """
    lines = [
        f"### Triton kernels on {info['device']} (sm {capability})",
        "",
        f"torch {info['torch']}, triton {info['triton']}, commit {info['commit']}, "
        f"{info['date']}. `python -m benchmarks.gpu`. Times: ms, median (p20-p80), CUDA events.",
        "",
    ]
    if peaks:
        lines += ["Measured peaks: " + ", ".join(f"{k} {v:.1f}" for k, v in peaks.items()), ""]
    lines += [
        "| op | precision | shape | pass | error / tol | Triton ms | reference ms | "
        "compiled ms | speedup | Triton rate | of peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in measurements:
        rate = m.rate(m.triton_ms[0])
        lines.append(
            f"| {m.op} | {m.precision} | {m.shape} | {m.pass_} | {m.error:.1e} / "
            f"{m.tolerance:.0e} {'ok' if m.correct else 'FAIL'} | {_fmt(m.triton_ms)} | "
            f"{_fmt(m.reference_ms)} | {_fmt(m.compiled_ms)} | {m.speedup:.2f}x | "
            f"{rate:.1f} {m.unit} | {rate / m.peak:.0%} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- on the GPU


def _timed(fn: Callable[[], object]) -> tuple[float, float, float]:
    t = time_call(fn, repeats=20, warmup=3)
    return t["median"] * 1e3, t["p20"] * 1e3, t["p80"] * 1e3


TIE_FRACTION = 1e-5
"""Gradients of the max-pool pyramid may differ at this fraction of elements: a 2x2 window whose
blurred values tie to float32 rounding can send its gradient to the other pixel than float64."""


def _relative_error(got: Sequence[torch.Tensor], expected: Sequence[torch.Tensor],
                    ignore_fraction: float = 0.0) -> float:
    """Largest ``|got - expected|`` over the largest ``|expected|``, per tensor, after dropping
    the worst ``ignore_fraction`` of the elements."""
    worst = 0.0
    for g, e in zip(got, expected, strict=True):
        scale = e.abs().max().item() or 1.0
        error = (g.double() - e).abs().flatten()
        drop = int(error.numel() * ignore_fraction)
        value = error.kthvalue(error.numel() - drop).values if drop else error.max()
        worst = max(worst, value.item() / scale)
    return worst


def _outputs(out) -> tuple[torch.Tensor, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _measure(family: str, op: str, precision: str, shape: str, shape_class: str,
             inputs: list[torch.Tensor], triton_fn: Callable, reference_fn: Callable,
             grad: bool, work: float, unit: str, peak: float,
             compile_reference: bool, grad_ties: bool = False) -> Measurement:
    """Check ``triton_fn`` against ``reference_fn`` in float64, then time all three."""
    leaves = [t.detach().requires_grad_(grad) for t in inputs]
    leaves64 = [t.detach().double().requires_grad_(grad) for t in inputs]
    with use_kernels(True):
        got = _outputs(triton_fn(*leaves))
    with use_kernels(False):
        expected = _outputs(reference_fn(*leaves64))
    error = _relative_error(got, expected)
    if grad:
        seeds = [torch.randn_like(e) for e in expected]
        got_g = torch.autograd.grad(got, leaves, [s.to(g.dtype) for s, g in zip(seeds, got,
                                                                               strict=True)])
        expected_g = torch.autograd.grad(expected, leaves64, seeds)
        error = max(error, _relative_error(got_g, expected_g, TIE_FRACTION if grad_ties else 0))

    def run(fn: Callable, enabled: bool) -> Callable[[], object]:
        def call() -> None:
            with use_kernels(enabled):
                out = _outputs(fn(*leaves))
                if grad:
                    torch.autograd.backward(out, [torch.ones_like(o) for o in out])
        return call

    compiled = None
    if compile_reference:
        compiled = _timed(run(torch.compile(reference_fn), False))
    return Measurement(
        family, op, precision, shape, shape_class, "fwd_bwd" if grad else "fwd", error,
        TOLERANCE[precision], _timed(run(triton_fn, True)), _timed(run(reference_fn, False)),
        compiled, work * (3 if grad else 1), unit, peak,
    )


def _peaks() -> dict[str, float]:
    """Copy bandwidth (GB/s) and matmul throughput (TFLOP/s) measured on this device."""
    peaks = {}
    source = torch.empty(2**28, device="cuda")  # 1 GiB
    target = torch.empty_like(source)
    ms = _timed(lambda: target.copy_(source))[0]
    peaks["copy GB/s"] = 2 * _bytes(source) / (ms * 1e-3) / 1e9
    n = 8192
    flags = torch.backends.cuda.matmul.allow_tf32
    for name, dtype, tf32 in (("float32", torch.float32, False), ("tf32", torch.float32, True),
                              ("bfloat16", torch.bfloat16, False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a, b = (torch.randn(n, n, device="cuda", dtype=dtype) for _ in range(2))
        ms = _timed(lambda a=a, b=b: a @ b)[0]
        peaks[f"{name} TFLOP/s"] = 2 * n**3 / (ms * 1e-3) / 1e12
    torch.backends.cuda.matmul.allow_tf32 = flags
    return peaks


def _bytes(*tensors: torch.Tensor) -> float:
    return float(sum(t.numel() * t.element_size() for t in tensors))


def _compiles(op: str, dtype: torch.dtype, size: int, sizes: Sequence[int]) -> bool:
    """Whether to time ``torch.compile`` too: each compile costs seconds to a minute, so only
    for the fused ops (a level, a coupling pass) in float32 at the first size."""
    fused = op in ("pyr_level", "affine_coupling_forward")
    return fused and dtype == torch.float32 and size == sizes[0]


def _pyramid_measurements(sizes, dtypes, peak) -> list[Measurement]:
    from flowkit.kernels import pyramid
    from flowkit.kernels.pyr_common import PyramidMode, pyramid_shape_class

    rows = []
    for size in sizes:
        for dtype in dtypes:
            for mode in PyramidMode:
                x = torch.randn(2, 16, size, size, device="cuda", dtype=dtype)
                down = pyramid.pyr_down_reference(x, mode)
                precision = str(dtype).removeprefix("torch.")
                cases = {
                    "pyr_down": ([x], lambda t, m=mode: pyramid.pyr_down(t, m),
                                 lambda t, m=mode: pyramid.pyr_down_reference(t, m), 1.25),
                    "pyr_up": ([down], lambda t, s=size, m=mode: pyramid.pyr_up(t, (s, s), m),
                               lambda t, s=size, m=mode: pyramid.pyr_up_reference(t, (s, s), m),
                               1.25),
                    "pyr_level": ([x], lambda t, m=mode: pyramid.pyr_level(t, m),
                                  lambda t, m=mode: pyramid.pyr_level_reference(t, m), 2.5),
                    "pyr_level_inverse": (
                        [x, down], lambda r, d, m=mode: pyramid.pyr_level_inverse(r, d, m),
                        lambda r, d, m=mode: pyramid.pyr_level_inverse_reference(r, d, m), 2.25),
                }
                for op, (inputs, fn, ref, passes) in cases.items():
                    for grad in (False, True):
                        rows.append(_measure(
                            "pyramid", op, precision, f"2x16x{size}^2 {mode.value}",
                            pyramid_shape_class(x.numel(), mode, grad), inputs, fn, ref, grad,
                            passes * _bytes(x), "GB/s", peak,
                            compile_reference=_compiles(op, dtype, size, sizes),
                            grad_ties=mode is PyramidMode.PYRAMIDFLOW))
    return rows


def _coupling_measurements(sizes, dtypes, peak) -> list[Measurement]:
    from flowkit.kernels import coupling

    rows = []
    ops = {"affine_coupling_forward": (coupling.affine_coupling_forward,
                                       coupling.affine_coupling_forward_reference),
           "affine_coupling_inverse": (coupling.affine_coupling_inverse,
                                       coupling.affine_coupling_inverse_reference)}
    for size in sizes:
        for dtype in dtypes:
            x = torch.randn(2, 16, size, size, device="cuda", dtype=dtype)
            h = torch.randn(2, 32, size, size, device="cuda", dtype=dtype)
            for op, (fn, ref) in ops.items():
                for grad in (False, True):
                    rows.append(_measure(
                        "coupling", op, str(dtype).removeprefix("torch."),
                        f"2x16x{size}^2", coupling.coupling_shape_class(x, grad), [x, h],
                        lambda a, b, fn=fn: fn(a, b, 2.0), lambda a, b, ref=ref: ref(a, b, 2.0),
                        grad, _bytes(x, h, x), "GB/s", peak,
                        compile_reference=_compiles(op, dtype, size, sizes)))
    return rows


def _conv_measurements(sizes, precisions, peaks) -> list[Measurement]:
    from flowkit.kernels import conv

    rows = []
    for precision in precisions:
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
        peak = peaks[f"{precision} TFLOP/s"]
        for size in sizes:
            for c_in, c_out in ((16, 32), (32, 32), (64, 64)):
                x = torch.randn(2, c_in, size, size, device="cuda", dtype=dtype)
                w = torch.randn(c_out, c_in, 7, 7, device="cuda", dtype=dtype) * 0.05
                flops = 2.0 * 2 * size * size * c_in * c_out * 49
                for grad in (False, True):
                    rows.append(_measure(
                        "conv", conv.OP_NAME, conv.conv_precision(dtype),
                        f"2x{c_in}->{c_out} 7x7 {size}^2", conv.conv_shape_class(x, w, grad),
                        [x, w], lambda a, b: conv.large_kernel_conv2d(a, b, None, "leaky_relu"),
                        lambda a, b: conv.large_kernel_conv2d_reference(a, b, None, "leaky_relu"),
                        grad, flops, "TFLOP/s", peak, compile_reference=False))
    torch.backends.cudnn.allow_tf32 = True
    return rows


def _pyramidflow_steps(sizes: Sequence[int]) -> list[dict]:
    rows = []
    for size in sizes:
        for mode in ("off", "on"):
            rows.append(run_isolated("benchmarks.pyramidflow_step", [
                f"--size={size}", "--batch=2", "--repeats=5", "--epochs=1", "--steps=1",
                "--one", mode]))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one size per op (256 px)")
    parser.add_argument("--no-write", action="store_true", help="do not write the tables")
    parser.add_argument("--tables", type=Path, default=TABLE_DIR, help="table folder")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr)
        return 2
    info = stamp()
    major, minor = torch.cuda.get_device_capability()
    capability = f"{major}.{minor}"
    sizes = (256,) if args.quick else (256, 1024)
    peaks = _peaks()
    print(f"# {info['device']} (sm {capability}); peaks: {peaks}", flush=True)
    dtypes = (torch.float32, torch.bfloat16, torch.float16)
    measurements = (
        _pyramid_measurements(sizes, dtypes, peaks["copy GB/s"])
        + _coupling_measurements(sizes, dtypes, peaks["copy GB/s"])
        + _conv_measurements(sizes, ("float32", "tf32", "bfloat16"), peaks)
    )
    report = format_report(measurements, info, capability, peaks)
    print(report, flush=True)
    failed = [m for m in measurements if not m.correct]
    rows = table_rows(measurements, info, capability)
    if not args.no_write:
        for path in write_tables(rows, args.tables):
            print(f"wrote {path}")
    steps = _pyramidflow_steps(sizes)
    print(f"\n### PyramidFlow training step on {info['device']}\n")
    print_table(steps, list(steps[0]))
    if args.out:
        args.out.write_text(json.dumps({
            "stamp": info, "capability": capability, "peaks": peaks,
            "measurements": [asdict(m) | {"correct": m.correct, "speedup": m.speedup}
                             for m in measurements],
            "pyramidflow_step": steps}, indent=1))
    if failed:
        print(f"{len(failed)} measurements FAILED the correctness check (see 'FAIL' above); "
              "their keys stay on the reference", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
