"""Training memory and step time against depth and resolution: plain autograd, per-block
``torch.utils.checkpoint``, flowkit's memory-saving engine, and, where they import, memcnn and
revlib, on a PyramidFlow-like stack.

Two networks, each measured by several engines:

- ``affine+1x1`` (the PyramidFlow-like stack): per block an affine coupling with a 7x7 conv
  subnet (16 channels: 8 -> 16 -> 16) and a volume-normalized 1x1 conv. Engines: ``plain``,
  ``checkpoint``, ``memory-saving`` and ``memcnn``. memcnn wraps each of our blocks in an adapter
  ``forward(x) -> (y, logdet)`` / ``inverse(y, logdet) -> x`` under
  ``memcnn.InvertibleModuleWrapper(keep_input=False)``: its checkpoint function returns and
  differentiates every output of the wrapped module, so the logdet is carried exactly and all
  four rows train the same loss ``0.5 |y|^2 - logdet``.
- ``additive`` (RevNet): revlib builds only RevNet couplings ``(x0, x1) -> (x1, x0 + f(x1))``
  from plain residual functions, so the revlib comparison runs on a network of that shape. Per
  block one coupling whose ``f`` is a ``ConvSubnet(8, 8, hidden=24)`` (7x7, no bias). Its cost
  matches the affine subnet exactly: 49 * (8*24 + 24*8) = 49 * (8*16 + 16*16) = 18816
  multiply-adds and weights per pixel and block; the additive network lacks only the 1x1 conv
  (256 multiply-adds per pixel, 1.4 %) and the affine element-wise work. Engines:
  ``plain-additive`` and ``memory-saving-additive`` (flowkit: ``SwapHalves`` then
  ``AdditiveCoupling`` per block, which is revlib's coupling exactly) and ``revlib``
  (``ReversibleSequential`` over copies of the same subnets). The three compute the same
  function with the same weights; the loss is ``0.5 |y|^2`` (the logdet is 0).

Per configuration it reports:

- ``saved MB``: bytes kept for backward after the forward (exact, deterministic): what autograd
  saves (``saved_tensors_hooks``) plus the live non-parameter tensors that custom autograd
  functions stash as ``ctx`` attributes, which the hooks do not see (memcnn keeps its blocks'
  inputs and outputs there, the inputs with their storage freed), each storage counted once;
- ``peak MB``: on CUDA, ``max_memory_allocated`` above the weights and input; on CPU the rise of
  the process's peak RSS during the step, each configuration in a fresh process;
- ``step s``: forward + backward, median and p20/p80; ``time vs plain`` against plain autograd
  on the same network.

memcnn and revlib are optional comparisons (``pip install flowkit[bench]`` brings revlib;
``pip install --no-deps memcnn``, as memcnn requires torchvision): where one does not import,
the header says why and its rows are left out.

Run: ``python -m benchmarks.memory`` (depths 2, 8, 32; 64 px on a GPU, 32 px on the CPU, < 2 min
on an idle 2-core machine) or ``--full`` (depths 2..64, 128..1024 px) on a GPU;
``--out results.json`` writes the rows with the stamp.

References:
    Gomez et al., "The Reversible Residual Network: Backpropagation Without Storing
    Activations", arXiv:1707.04585.
    van de Leemput et al., "MemCNN: A Python/PyTorch package for creating memory-efficient
    invertible neural networks", JOSS 4(39):1576, 2019.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import enum
import functools
import importlib
import json
import resource
import subprocess
import sys
import warnings
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

import flowkit
from flowkit import layers

from .common import print_table, stamp, time_call, write_json

__all__ = [
    "BASELINE",
    "METHODS",
    "NETWORK",
    "OPTIONAL_ENGINES",
    "MemcnnSequential",
    "Network",
    "RevlibSequential",
    "SwapHalves",
    "build",
    "import_error",
    "loss_of",
    "main",
    "measure",
    "saved_bytes",
]

CHANNELS = 16
KERNEL = 7
#: Hidden channels of the additive subnet: 8 -> 24 -> 8 costs what the affine 8 -> 16 -> 16 does.
ADDITIVE_HIDDEN = 24
PERTURB_SCALE = 0.02



class Network(str, enum.Enum):
    """The two networks; every method runs one of them."""

    AFFINE = "affine+1x1"
    ADDITIVE = "additive"


#: The loss each network trains (the additive network's logdet is 0; revlib has none).
LOSS = {Network.AFFINE: "0.5|y|^2 - logdet", Network.ADDITIVE: "0.5|y|^2 (logdet 0)"}

#: Optional engine -> the package it needs.
OPTIONAL_ENGINES = {"memcnn": "memcnn", "revlib": "revlib"}
#: Method -> the network it runs.
NETWORK = {
    "plain": Network.AFFINE,
    "checkpoint": Network.AFFINE,
    "memory-saving": Network.AFFINE,
    "memcnn": Network.AFFINE,
    "plain-additive": Network.ADDITIVE,
    "memory-saving-additive": Network.ADDITIVE,
    "revlib": Network.ADDITIVE,
}
#: The plain-autograd baseline of each network, for ``time vs plain``.
BASELINE = {Network.AFFINE: "plain", Network.ADDITIVE: "plain-additive"}


@functools.cache
def import_error(package: str) -> str | None:
    """Why ``package`` does not import (``"not installed"`` or the error), ``None`` if it does."""
    try:
        with warnings.catch_warnings():  # memcnn's deprecated torch.cuda.amp decorators
            warnings.simplefilter("ignore")
            importlib.import_module(package)
    except ModuleNotFoundError as error:
        return "not installed" if error.name == package else f"does not import: {error}"
    except Exception as error:  # any failure to import means: leave the engine out
        return f"does not import: {type(error).__name__}: {error}"
    return None


METHODS = tuple(
    m for m in NETWORK if m not in OPTIONAL_ENGINES or import_error(OPTIONAL_ENGINES[m]) is None
)


class SwapHalves(layers.Permute):
    """Swap the two channel halves (RevNet's stream swap); logdet 0."""

    @staticmethod
    def _make(channels: int, generator: torch.Generator | None) -> Tensor:
        half = channels // 2
        return torch.cat([torch.arange(half, channels), torch.arange(half)])


def build_blocks(depth: int) -> list[flowkit.Flow]:
    """``depth`` PyramidFlow-like blocks: coupling (7x7 subnet) + volume-normalized 1x1 conv."""

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return layers.ConvSubnet(c_in, c_out, hidden=c_out, kernel_size=KERNEL, bias=False)

    blocks: list[flowkit.Flow] = []
    for _ in range(depth):
        blocks += [
            layers.AffineCoupling(CHANNELS, subnet),
            layers.InvConv1x1(CHANNELS, volume_norm=True),
        ]
    return blocks


def build_additive_blocks(depth: int) -> list[flowkit.Flow]:
    """``depth`` RevNet couplings ``(x0, x1) -> (x1, x0 + f(x1))``: swap, then add to one half."""

    def subnet(c_in: int, c_out: int) -> nn.Module:
        return layers.ConvSubnet(c_in, c_out, hidden=ADDITIVE_HIDDEN, kernel_size=KERNEL,
                                 bias=False)

    blocks: list[flowkit.Flow] = []
    for _ in range(depth):
        blocks += [SwapHalves(CHANNELS), layers.AdditiveCoupling(CHANNELS, subnet)]
    return blocks


class CheckpointedSequential(flowkit.Sequential):
    """Each block under ``torch.utils.checkpoint``: the standard recompute baseline."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device)
        for block in self.blocks:
            x, block_logdet = checkpoint(block, x, use_reentrant=False)
            logdet = logdet + block_logdet
        return x, logdet


def _own(t: Tensor) -> Tensor:
    return t if t._base is None else t.clone()


class _MemcnnAdapter(nn.Module):
    """One flowkit block with the interface memcnn wraps: both directions, logdet carried along.

    memcnn's checkpoint function returns every output of ``forward`` and differentiates all of
    them in its backward, so the logdet is an ordinary second output; ``inverse`` receives both
    outputs and rebuilds the input from ``y`` alone.
    """

    def __init__(self, block: flowkit.Flow) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, logdet = self.block(x)
        # memcnn detaches its outputs in place, which views forbid (InvConv1x1's logdet is an
        # expanded scalar): give views their own storage.
        return _own(y), _own(logdet)

    def inverse(self, y: Tensor, logdet: Tensor) -> Tensor:
        return self.block.inverse(y)


class MemcnnSequential(nn.Module):
    """flowkit blocks, each under ``memcnn.InvertibleModuleWrapper`` (inputs freed, rebuilt)."""

    def __init__(self, blocks: Iterable[flowkit.Flow]) -> None:
        super().__init__()
        import memcnn

        self.blocks = nn.ModuleList(
            memcnn.InvertibleModuleWrapper(
                fn=_MemcnnAdapter(block), keep_input=False, keep_input_inverse=False
            )
            for block in blocks
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # memcnn frees the storage of each block's input; the clone keeps the caller's tensor.
        x = x.clone()
        logdet = torch.zeros(x.shape[0], device=x.device)
        for block in self.blocks:
            x, block_logdet = block(x)
            logdet = logdet + block_logdet
        return x, logdet


class RevlibSequential(nn.Module):
    """``revlib.ReversibleSequential`` over the subnets of RevNet couplings (no logdet: 0).

    revlib's autograd function takes the parameters from its module, not as inputs, so its
    graph exists only when the input requires grad: the input is marked so, which adds the
    input gradient of the first block to revlib's backward.
    """

    def __init__(self, subnets: Iterable[nn.Module]) -> None:
        super().__init__()
        import revlib

        self.net = revlib.ReversibleSequential(*subnets, split_dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        if not x.requires_grad:
            x = x.detach().requires_grad_()
        return self.net(x), None


def build(method: str, depth: int, device: str) -> nn.Module:
    """The network of ``method`` with ``depth`` blocks; weights perturbed from a fixed seed.

    Methods on the same network get identical weights (revlib's subnets are copies of those of
    ``memory-saving-additive``), so their rows differ only in the engine.
    """
    if method not in NETWORK:
        raise ValueError(f"unknown method {method!r}; expected one of {list(NETWORK)}")
    if NETWORK[method] == Network.AFFINE:
        blocks = build_blocks(depth)
    else:
        blocks = build_additive_blocks(depth)
    flowkit.testing.perturb_parameters_(nn.ModuleList(blocks), scale=PERTURB_SCALE)
    flow: nn.Module
    if method == "checkpoint":
        flow = CheckpointedSequential(*blocks)
    elif method == "memcnn":
        flow = MemcnnSequential(blocks)
    elif method == "revlib":
        couplings = [b for b in blocks if isinstance(b, layers.AdditiveCoupling)]
        flow = RevlibSequential(copy.deepcopy(c.subnet) for c in couplings)
    else:
        flow = flowkit.Sequential(*blocks, memory_saving=method.startswith("memory-saving"))
    return flow.to(device)


def loss_of(y: Tensor, logdet: Tensor | None) -> Tensor:
    """``0.5 |y|^2 - logdet`` summed over the batch; engines without a logdet pass ``None``."""
    loss = 0.5 * y.square().sum()
    return loss if logdet is None else loss - logdet.sum()


def step(flow: nn.Module, x: Tensor) -> None:
    loss_of(*flow(x)).backward()


def _tensors(value: object) -> Iterable[Tensor]:
    """Tensors inside ``value``, through lists, tuples, dicts and dataclasses."""
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _tensors(getattr(value, f.name))


def _ctx_stashed(roots: Iterable[Tensor], parameters: set[int], seen: set[int]) -> int:
    """Bytes of the storages that custom autograd functions in the graph keep on ``ctx``.

    Parameters and storages already in ``seen`` are not counted; ``seen`` is updated.
    """
    total = 0
    stack = [r.grad_fn for r in roots if r.grad_fn is not None]
    visited: set[int] = set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        stack.extend(n for n, _ in node.next_functions)
        for t in _tensors(list(getattr(node, "__dict__", {}).values())):
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in parameters or ptr in seen:
                continue
            seen.add(ptr)
            total += storage.nbytes()
    return total


def saved_bytes(flow: nn.Module, x: Tensor) -> int:
    """Bytes kept for backward after ``flow``'s forward on ``x`` (see the module docstring)."""
    total = 0
    seen: set[int] = set()

    def pack(t: Tensor) -> Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, logdet = flow(x)
    parameters = {p.untyped_storage().data_ptr() for p in flow.parameters()}
    roots = [y] if logdet is None else [y, logdet]
    total += _ctx_stashed(roots, parameters, seen)
    loss_of(y, logdet).backward()
    return total


def measure(method: str, depth: int, size: int, batch: int, repeats: int) -> dict:
    """One configuration, in this process."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    flow = build(method, depth, device)
    x = torch.randn(batch, CHANNELS, size, size, device=device)
    saved = saved_bytes(flow, x)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(flow, x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        step(flow, x)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    times = time_call(lambda: step(flow, x), repeats=repeats)
    return {
        "network": NETWORK[method].value,
        "method": method,
        "loss": LOSS[NETWORK[method]],
        "depth": depth,
        "size": size,
        "batch": batch,
        "saved MB": round(saved / 2**20, 2),
        "peak MB": round(peak / 2**20, 1),
        "step s": round(times["median"], 4),
        "p20 s": round(times["p20"], 4),
        "p80 s": round(times["p80"], 4),
    }


def measure_isolated(method: str, depth: int, size: int, batch: int, repeats: int) -> dict:
    """One configuration in a fresh process, so its peak RSS is its own."""
    args = [sys.executable, "-m", "benchmarks.memory", "--one", method, str(depth), str(size),
            str(batch), "--repeats", str(repeats)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def optional_engines() -> list[str]:
    """memcnn and revlib are compared where they import; say which do not."""
    return [
        f"{name}: {import_error(package) or 'installed'}"
        for name, package in OPTIONAL_ENGINES.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="depths 2..64, sizes 128..1024")
    parser.add_argument("--depths", type=int, nargs="+")
    parser.add_argument("--sizes", type=int, nargs="+")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--one", nargs=4, metavar=("METHOD", "DEPTH", "SIZE", "BATCH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        method, depth, size, batch = args.one
        print(json.dumps(measure(method, int(depth), int(size), int(batch), args.repeats)))
        return
    on_gpu = torch.cuda.is_available()
    depths = args.depths or ([2, 8, 16, 32, 64] if args.full else [2, 8, 32])
    # 32 px on the CPU keeps the default run (seven engines, a process each) under 2 minutes.
    sizes = args.sizes or ([128, 256, 512, 1024] if args.full else [64] if on_gpu else [32])
    info = stamp()
    print(f"# memory benchmark on {info['device']} (torch {info['torch']}, commit "
          f"{info['commit']}, {info['date']})")
    print("# " + "; ".join(optional_engines()))
    rows = []
    for size in sizes:
        for depth in depths:
            for method in METHODS:
                run = measure if on_gpu else measure_isolated
                rows.append(run(method, depth, size, args.batch, args.repeats))
    plain = {(r["method"], r["size"], r["depth"]): r["step s"] for r in rows}
    for r in rows:
        baseline = plain[(BASELINE[Network(r["network"])], r["size"], r["depth"])]
        r["time vs plain"] = round(r["step s"] / baseline, 2)
    print_table(rows, ["network", "method", "loss", "depth", "size", "batch", "saved MB",
                       "peak MB", "step s", "p20 s", "p80 s", "time vs plain"])
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
