"""Training memory and step time against depth and resolution: plain autograd, per-block
``torch.utils.checkpoint``, and flowkit's memory-saving engine, on a PyramidFlow-like stack.

Each block is an affine coupling with a 7x7 conv subnet (16 channels: 8 -> 16 -> 16) and a
volume-normalized 1x1 conv. Per configuration it reports:

- ``saved MB``: bytes autograd keeps for backward during the forward (exact, deterministic);
- ``peak MB``: on CUDA, ``max_memory_allocated`` above the weights and input; on CPU the rise of
  the process's peak RSS during the step, each configuration in a fresh process;
- ``step s``: forward + backward, median and p20/p80.

memcnn and revlib are optional comparisons: reported as not installed where they do not import.

Run: ``python -m benchmarks.memory`` (small CPU grid, < 2 min) or ``--full`` (depths 2..64,
128..1024 px) on a GPU; ``--out results.json`` writes the rows with the stamp.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys

import torch
from torch.utils.checkpoint import checkpoint

import flowkit
from flowkit import layers

from .common import print_table, stamp, time_call, write_json

CHANNELS = 16
KERNEL = 7
METHODS = ("plain", "checkpoint", "memory-saving")


def build_blocks(depth: int) -> list[flowkit.Flow]:
    """``depth`` PyramidFlow-like blocks: coupling (7x7 subnet) + volume-normalized 1x1 conv."""

    def subnet(c_in: int, c_out: int) -> torch.nn.Module:
        return layers.ConvSubnet(c_in, c_out, hidden=c_out, kernel_size=KERNEL, bias=False)

    blocks: list[flowkit.Flow] = []
    for _ in range(depth):
        blocks += [
            layers.AffineCoupling(CHANNELS, subnet),
            layers.InvConv1x1(CHANNELS, volume_norm=True),
        ]
    return blocks


class CheckpointedSequential(flowkit.Sequential):
    """Each block under ``torch.utils.checkpoint``: the standard recompute baseline."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logdet = torch.zeros(x.shape[0], device=x.device)
        for block in self.blocks:
            x, block_logdet = checkpoint(block, x, use_reentrant=False)
            logdet = logdet + block_logdet
        return x, logdet


def build(method: str, depth: int, device: str) -> flowkit.Sequential:
    blocks = build_blocks(depth)
    if method == "checkpoint":
        flow = CheckpointedSequential(*blocks)
    else:
        flow = flowkit.Sequential(*blocks, memory_saving=method == "memory-saving")
    return flowkit.testing.perturb_parameters_(flow, scale=0.02).to(device)


def step(flow: flowkit.Sequential, x: torch.Tensor) -> None:
    y, logdet = flow(x)
    (0.5 * y.square().sum() - logdet.sum()).backward()


def saved_bytes(flow: flowkit.Sequential, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y, logdet = flow(x)
    (0.5 * y.square().sum() - logdet.sum()).backward()
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
        "method": method,
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
    found = {name: importlib.util.find_spec(name) is not None for name in ("memcnn", "revlib")}
    return [f"{name}: {'installed' if ok else 'not installed'}" for name, ok in found.items()]


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
    sizes = args.sizes or ([128, 256, 512, 1024] if args.full else [64])
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
    plain = {(r["size"], r["depth"]): r["step s"] for r in rows if r["method"] == "plain"}
    for r in rows:
        r["time vs plain"] = round(r["step s"] / plain[(r["size"], r["depth"])], 2)
    print_table(rows, ["method", "depth", "size", "batch", "saved MB", "peak MB", "step s",
                       "p20 s", "p80 s", "time vs plain"])
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
