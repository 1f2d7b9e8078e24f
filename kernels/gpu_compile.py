"""Compile every kernel configuration the launchers can choose for sm_80 and sm_90, without a GPU.

Triton compiles for a GPU target on any machine (its ``ptxas`` is bundled), so CI can check what
only a GPU would otherwise reveal: that every configuration compiles, and its register, spill
and shared-memory budget. The configurations are not listed by hand: :func:`launch_configs` runs
each launcher over the inputs it supports (dtypes, TF32 on/off, modes, channel, kernel and image
sizes) with its kernels replaced by recorders, and keeps the distinct launches: kernel,
constexprs, pointer dtypes, warps and stages. (Triton also specializes integer arguments by
value, ``== 1`` and divisibility by 16; those variants only drop instructions or widen loads of
the same tiles and are not compiled separately: integers compile as generic ``i32``, pointers as
16-aligned, as every tensor the launchers allocate is.) :func:`compile_for` compiles one for a
capability; registers and the stack frame (local memory: Triton's ``n_spills`` is its size / 4)
are read from the cubin.

Run ``python -m flowkit.kernels.gpu_compile`` (not under ``TRITON_INTERPRET=1``) for the table;
it exits with status 1 if any configuration spills.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "CAPABILITIES",
    "CompileResult",
    "KernelLaunch",
    "compile_for",
    "launch_configs",
    "main",
]

CAPABILITIES = (80, 90)
"""sm_80 (A100) and sm_90 (H100/H200)."""

_TRITON_DEFAULTS = {"num_warps": 4, "num_stages": 3}
_POINTER_TYPES = {
    torch.float64: "fp64", torch.float32: "fp32", torch.float16: "fp16",
    torch.bfloat16: "bf16", torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64",
}


@dataclass(frozen=True)
class KernelLaunch:
    """One kernel configuration as a launcher chose it.

    Attributes:
        module: the module defining the kernel.
        kernel: the kernel's name.
        signature: ``(argument, type)`` for the runtime arguments (``*fp32``, ``i32``, ...).
        constexprs: ``(argument, value)`` for the compile-time ones (incl. Triton's ``== 1``).
        aligned: the pointer arguments Triton marks 16-aligned.
        num_warps: warps per program.
        num_stages: software-pipelining stages.
    """

    module: str
    kernel: str
    signature: tuple[tuple[str, str], ...]
    constexprs: tuple[tuple[str, object], ...]
    aligned: tuple[str, ...]
    num_warps: int
    num_stages: int

    def label(self) -> str:
        """A short, human-readable description: kernel, dtypes and constexprs."""
        pointers = sorted({t[1:] for _, t in self.signature if t.startswith("*")})
        consts = ",".join(f"{k}={v}" for k, v in self.constexprs)
        return (f"{self.kernel}[{'/'.join(pointers)}] {consts} "
                f"w{self.num_warps}s{self.num_stages}")


@dataclass(frozen=True)
class CompileResult:
    """What the compiled cubin needs per thread and per program."""

    capability: int
    registers: int
    spill_bytes: int
    shared_bytes: int


def _argument_type(value: object) -> tuple[str, bool]:
    """Triton's signature type of a runtime argument, and whether it is a 16-aligned pointer."""
    if isinstance(value, torch.Tensor):
        return "*" + _POINTER_TYPES[value.dtype], value.data_ptr() % 16 == 0
    if isinstance(value, bool):
        return "i1", False
    if isinstance(value, int):
        return ("i32" if -(2**31) <= value < 2**31 else "i64"), False
    if isinstance(value, float):
        return "fp32", False
    raise TypeError(f"cannot type kernel argument {value!r}")


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kwargs)`` records."""

    def __init__(self, fn, launches: set[KernelLaunch]) -> None:
        self.fn = fn
        self.launches = launches

    def __getitem__(self, grid) -> Callable[..., None]:
        if any(int(g) < 1 for g in grid):
            raise ValueError(f"{self.fn.__name__}: empty grid {grid}")
        return self._record

    def _record(self, *args, **kwargs) -> None:
        options = {k: kwargs.pop(k, d) for k, d in _TRITON_DEFAULTS.items()}
        names = self.fn.arg_names
        bound = dict(zip(names, args, strict=False)) | kwargs
        constexpr_names = {p.name for p in self.fn.params if p.is_constexpr}
        signature, constexprs, aligned = [], [], []
        for name in names:
            value = bound[name]
            if name in constexpr_names:
                constexprs.append((name, value))
            else:
                kind, aligned_pointer = _argument_type(value)
                signature.append((name, kind))
                if aligned_pointer:
                    aligned.append(name)
        self.launches.add(KernelLaunch(
            self.fn.__module__, self.fn.__name__, tuple(signature), tuple(constexprs),
            tuple(aligned), options["num_warps"], options["num_stages"]))


@contextlib.contextmanager
def _recording(module, launches: set[KernelLaunch]) -> Iterator[None]:
    """Replace every ``@triton.jit`` kernel launched from ``module`` by a recorder."""
    from triton.runtime.jit import JITFunction

    kernels = {name: fn for name, fn in vars(module).items()
               if isinstance(fn, JITFunction) and name.endswith("_kernel")}
    for name, fn in kernels.items():
        setattr(module, name, _Recorder(fn, launches))
    try:
        yield
    finally:
        for name, fn in kernels.items():
            setattr(module, name, fn)


@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


_HALF_AND_SINGLE = (torch.float32, torch.bfloat16, torch.float16)
_ALL_FLOATS = (*_HALF_AND_SINGLE, torch.float64)
_IMAGE_SIZES = ((64, 64), (36, 50), (2, 2))  # aligned, ragged (odd in gaussian), smallest


def _conv_launches(launches: set[KernelLaunch]) -> None:
    from . import conv_triton

    with _recording(conv_triton, launches):
        for dtype in _HALF_AND_SINGLE:
            for tf32 in ((False, True) if dtype == torch.float32 else (False,)):
                for c_in, c_out in ((4, 4), (16, 17), (16, 32), (33, 64), (64, 64), (64, 16)):
                    for width in (8, 64):
                        for k in (3, 7, 11):
                            x = torch.zeros(1, c_in, 16, width, dtype=dtype)
                            w = torch.zeros(c_out, c_in, k, k, dtype=dtype)
                            with _tf32(tf32):
                                y = conv_triton.large_kernel_conv2d_triton(x, w, w[:, 0, 0, 0])
                                conv_triton.large_kernel_conv2d_backward_triton(
                                    y, x, w, y, "leaky_relu", 0.01)


def _coupling_launches(launches: set[KernelLaunch]) -> None:
    from . import coupling_triton

    with _recording(coupling_triton, launches):
        for dtype in _ALL_FLOATS:
            for shape in ((2, 16, 64, 64), (3, 5, 37)):
                u = torch.zeros(shape, dtype=dtype)
                h = torch.zeros((shape[0], 2 * shape[1], *shape[2:]), dtype=dtype)
                for fn in ("atan", "tanh"):
                    for reverse in (False, True):
                        coupling_triton.affine_coupling_triton(u, h, 2.0, fn, reverse)
                        coupling_triton.affine_coupling_backward_triton(
                            u, torch.zeros(shape[0], dtype=dtype), u, h, 2.0, fn, reverse)


def _pyramid_launches(launches: set[KernelLaunch]) -> None:
    from . import pyr_kernels
    from .pyr_common import PyramidMode

    with _recording(pyr_kernels, launches):
        for dtype in _ALL_FLOATS:
            for mode in PyramidMode:
                for height, width in _IMAGE_SIZES:
                    height += height % 2 if mode is PyramidMode.PYRAMIDFLOW else 1
                    x = torch.zeros(2, 3, height, width, dtype=dtype)
                    residual, down, argmax = pyr_kernels.pyr_level_triton(x, mode)
                    pyr_kernels.pyr_level_backward_triton(residual, down, argmax, mode)
                    pyr_kernels.pyr_level_inverse_triton(residual, down, mode)
                    pyr_kernels.pyr_down_backward_triton(down, argmax, (height, width), mode)
                    pyr_kernels.pyr_up_triton(down, (height, width), mode)
                    pyr_kernels.pyr_up_backward_triton(x, tuple(down.shape[-2:]), mode)


def launch_configs() -> list[KernelLaunch]:
    """Every distinct kernel configuration the launchers choose over their supported inputs.

    Raises:
        RuntimeError: under ``TRITON_INTERPRET=1``, where kernels are not compiled.
    """
    from triton import knobs

    if knobs.runtime.interpret:
        raise RuntimeError("gpu_compile needs compiled kernels: run it without TRITON_INTERPRET=1")
    launches: set[KernelLaunch] = set()
    _conv_launches(launches)
    _coupling_launches(launches)
    _pyramid_launches(launches)
    return sorted(launches, key=lambda launch: launch.label())


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """``(registers, stack bytes)`` of the one function in ``cubin``, by ``cuobjdump``."""
    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([knobs.nvidia.cuobjdump.path, "--dump-resource-usage", f.name],
                              capture_output=True, text=True, check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if match is None:
        raise RuntimeError(f"cuobjdump printed no resource usage:\n{text}")
    return int(match.group(1)), int(match.group(2))


def compile_for(launch: KernelLaunch, capability: int) -> CompileResult:
    """Compile ``launch`` for ``sm_<capability>`` and read its resources.

    Raises:
        triton.CompilationError / PTXASError: if it does not compile.
    """
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(launch.module), launch.kernel)
    names = fn.arg_names
    signature = dict(launch.signature) | {name: "constexpr" for name, _ in launch.constexprs}
    attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in launch.aligned}
    source = ASTSource(fn, signature, constexprs=dict(launch.constexprs), attrs=attrs)
    compiled = triton.compile(source, target=GPUTarget("cuda", capability, 32),
                              options={"num_warps": launch.num_warps,
                                       "num_stages": launch.num_stages})
    registers, stack = _resource_usage(compiled.asm["cubin"])
    return CompileResult(capability, registers, stack, compiled.metadata.shared)


def main(argv: list[str] | None = None) -> int:
    """Print (or write as JSON) every configuration's resources; 1 if any spills."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capabilities", type=int, nargs="+", default=list(CAPABILITIES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    rows = []
    print("| kernel config | sm | registers | spill B | shared B |")
    print("|---|---|---|---|---|")
    for launch in launch_configs():
        for capability in args.capabilities:
            result = compile_for(launch, capability)
            rows.append({"launch": asdict(launch), "label": launch.label(), **asdict(result)})
            print(f"| {launch.label()} | {capability} | {result.registers} | "
                  f"{result.spill_bytes} | {result.shared_bytes} |", flush=True)
    spilling = [r for r in rows if r["spill_bytes"]]
    print(f"{len(rows)} compiles, {len(spilling)} with spills")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 1 if spilling else 0


if __name__ == "__main__":
    sys.exit(main())
