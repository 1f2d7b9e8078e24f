"""Benchmark of the large-kernel convolution and a whole coupling block: Triton vs cuDNN/eager.

On a CUDA device, for PyramidFlow shapes (kernel 7; batch 2 and 16; 16/32/64 channels; 256, 512
and 1024 px) it times the forward and forward+backward of

* ``triton``: our kernels (the ``flowkit::large_kernel_conv2d`` op, whatever the dispatch table);
* ``cudnn_nchw`` / ``cudnn_nhwc``: ``F.conv2d`` (the test reference) on NCHW and channels-last
  tensors, ``torch.backends.cudnn.benchmark = True``;

in float32, TF32 and bfloat16, and one ConvSubnet-like coupling block (conv 7x7 C->2C, LeakyReLU,
conv 7x7 2C->2C, affine coupling) as ours, eager PyTorch, and ``torch.compile`` of eager. Times
are ``triton.testing.do_bench`` median, p20 and p80 in ms; TFLOP/s and the fraction of the
device's peak, measured here with a large matmul in the same precision. The dispatch table is
written by ``python -m benchmarks.gpu``, which validates and times every op family.

Without CUDA it says so and times only the references on tiny sizes (well under a minute).

Usage::

    python -m benchmarks.conv --out conv.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from flowkit.kernels.conv import large_kernel_conv2d_reference
from flowkit.kernels.coupling import affine_coupling_forward_reference
from flowkit.kernels.soft_clamp import ClampFn

from .common import stamp

KERNEL = 7
SLOPE = 0.01
CLAMP = 2.0
PRECISIONS = ("float32", "tf32", "bfloat16")


@dataclass
class Row:
    """One timed configuration."""

    op: str
    impl: str
    precision: str
    batch: int
    c_in: int
    c_out: int
    size: int
    pass_: str
    median_ms: float
    p20_ms: float
    p80_ms: float
    tflops: float
    peak_fraction: float


@contextlib.contextmanager
def precision_mode(precision: str) -> Iterator[torch.dtype]:
    """Set TF32 for ``precision`` and yield its tensor dtype; restore the flags after."""
    flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield torch.bfloat16 if precision == "bfloat16" else torch.float32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def bench(fn: Callable[[], object], grads: list[torch.Tensor]) -> tuple[float, float, float]:
    """Median, p20 and p80 time of ``fn`` in ms (``do_bench`` on CUDA, a wall clock on CPU)."""
    if torch.cuda.is_available():
        import triton.testing

        median, p20, p80 = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8],
                                                   grad_to_none=grads)
        return median, p20, p80
    fn()  # warm-up
    times = []
    for _ in range(15):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    deciles = statistics.quantiles(times, n=10)
    return statistics.median(times), deciles[1], deciles[7]


def measured_peak_tflops(dtype: torch.dtype) -> float:
    """The device's matmul throughput in the current precision mode (TF32 flags included)."""
    n = 8192 if torch.cuda.is_available() else 1024
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    median, _, _ = bench(lambda: a @ b, [])
    return 2 * n**3 / median / 1e9


def conv_flops(batch: int, c_in: int, c_out: int, size: int) -> float:
    """FLOPs of one forward convolution (a multiply-add counts 2)."""
    return 2.0 * batch * size * size * c_in * c_out * KERNEL * KERNEL


def timed(fn: Callable[[], torch.Tensor], grads: list[torch.Tensor], backward: bool):
    """Time ``fn`` alone, or with a backward of its output(s) through autograd."""
    if not backward:
        return bench(fn, grads)

    def step() -> None:
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return bench(step, grads)


def conv_rows(batch: int, channels: int, size: int, precision: str, impls: dict, peak: float,
              device: str) -> list[Row]:
    """Forward and forward+backward rows of every implementation for one shape."""
    with precision_mode(precision) as dtype:
        rows = []
        x = torch.randn(batch, channels, size, size, device=device, dtype=dtype)
        w = torch.randn(channels, channels, KERNEL, KERNEL, device=device, dtype=dtype) * 0.05
        for impl, fn in impls.items():
            xi = x.contiguous(memory_format=torch.channels_last) if impl != "cudnn_nchw" else x
            for pass_, backward in (("fwd", False), ("fwd_bwd", True)):
                leaves = [xi.detach().requires_grad_(backward), w.detach().requires_grad_(backward)]
                median, p20, p80 = timed(lambda fn=fn, leaves=leaves: fn(*leaves),
                                         leaves if backward else [], backward)
                flops = conv_flops(batch, channels, channels, size) * (3 if backward else 1)
                tflops = flops / median / 1e9
                rows.append(Row("conv7x7", impl, precision, batch, channels, channels, size, pass_,
                                median, p20, p80, tflops, tflops / peak))
        return rows


def block_eager(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor):
    """ConvSubnet-like coupling block from the references: (y, logdet)."""
    passive, active = x.chunk(2, dim=1)
    hidden = large_kernel_conv2d_reference(passive, w1, None, "leaky_relu", SLOPE)
    h = large_kernel_conv2d_reference(hidden, w2)
    y, logdet = affine_coupling_forward_reference(active, h, CLAMP, ClampFn.ATAN)
    return torch.cat([passive, y], dim=1), logdet


def block_ours(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor):
    """The same block on our Triton ops (forced, whatever the dispatch table says)."""
    passive, active = x.chunk(2, dim=1)
    hidden = torch.ops.flowkit.large_kernel_conv2d(passive, w1, None, "leaky_relu", SLOPE)
    h = torch.ops.flowkit.large_kernel_conv2d(hidden, w2, None, "none", 0.0)
    y, logdet = torch.ops.flowkit.affine_coupling(active, h, CLAMP, ClampFn.ATAN.value, False)
    return torch.cat([passive, y], dim=1), logdet


def block_rows(batch: int, channels: int, size: int, precision: str, impls: dict, peak: float,
               device: str) -> list[Row]:
    """Rows of one coupling block on ``2 * channels`` input channels."""
    with precision_mode(precision) as dtype:
        rows = []
        x = torch.randn(batch, 2 * channels, size, size, device=device, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        w1 = torch.randn(2 * channels, channels, KERNEL, KERNEL, device=device, dtype=dtype) * 0.05
        w2 = torch.randn(2 * channels, 2 * channels, KERNEL, KERNEL, device=device,
                         dtype=dtype) * 0.01
        flops_fwd = conv_flops(batch, channels, 2 * channels, size) + conv_flops(
            batch, 2 * channels, 2 * channels, size)
        for impl, fn in impls.items():
            for pass_, backward in (("fwd", False), ("fwd_bwd", True)):
                leaves = [t.detach().requires_grad_(backward) for t in (x, w1, w2)]
                median, p20, p80 = timed(lambda fn=fn, leaves=leaves: fn(*leaves),
                                         leaves if backward else [], backward)
                tflops = flops_fwd * (3 if backward else 1) / median / 1e9
                rows.append(Row("coupling_block", impl, precision, batch, channels, 2 * channels,
                                size, pass_, median, p20, p80, tflops, tflops / peak))
        return rows


def print_table(rows: list[Row]) -> None:
    header = (f"{'op':<15}{'impl':<12}{'prec':<10}{'B':>3}{'Cin':>5}{'Cout':>5}{'px':>6}"
              f"{'pass':>9}{'median ms':>11}{'p20':>9}{'p80':>9}{'TFLOP/s':>9}{'of peak':>9}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r.op:<15}{r.impl:<12}{r.precision:<10}{r.batch:>3}{r.c_in:>5}{r.c_out:>5}"
              f"{r.size:>6}{r.pass_:>9}{r.median_ms:>11.3f}{r.p20_ms:>9.3f}{r.p80_ms:>9.3f}"
              f"{r.tflops:>9.3f}{r.peak_fraction:>9.1%}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the rows and stamp as JSON here")
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    args = parser.parse_args(argv)

    cuda = torch.cuda.is_available()
    info = stamp()
    print(" | ".join(f"{k}: {v}" for k, v in info.items()))
    conv_impls = {"cudnn_nchw": large_kernel_conv2d_reference,
                  "cudnn_nhwc": large_kernel_conv2d_reference}
    block_impls = {"eager": block_eager}
    if cuda:
        torch.backends.cudnn.benchmark = True
        device = "cuda"
        conv_impls["triton"] = lambda x, w: torch.ops.flowkit.large_kernel_conv2d(
            x, w, None, "none", 0.0)
        block_impls.update({"ours": block_ours, "compile": torch.compile(block_eager)})
        shapes = [(b, c, s) for b in args.batch for c in args.channels for s in args.sizes]
        precisions = args.precisions
    else:
        print("No CUDA device: timing only the PyTorch references (CPU) on tiny sizes; Triton "
              "kernels and torch.compile are not timed.")
        device = "cpu"
        conv_impls = {"reference": large_kernel_conv2d_reference}
        shapes = [(2, 16, 32), (2, 16, 64)]
        precisions = ["float32"]

    rows: list[Row] = []
    for precision in precisions:
        with precision_mode(precision) as dtype:
            peak = measured_peak_tflops(dtype)
        print(f"measured matmul peak, {precision}: {peak:.2f} TFLOP/s")
        for batch, channels, size in shapes:
            rows += conv_rows(batch, channels, size, precision, conv_impls, peak, device)
            if channels * 2 <= 64:
                rows += block_rows(batch, channels, size, precision, block_impls, peak, device)
    print_table(rows)

    if args.out:
        args.out.write_text(json.dumps({"stamp": info, "rows": [asdict(r) for r in rows]},
                                       indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
