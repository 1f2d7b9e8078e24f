"""PyramidFlow's training step end to end: time and memory with and without memory saving.

The official ``train.py`` settings with ``--encoder none`` (256 px, ``L = 4``, ``C = 16``,
batch 2, 4 stacks, 7x7 subnets; the official code's step time at them is printed by
``python -m benchmarks.parity_official``), one fresh process per configuration so
that its peak RSS is its own. Reports the step time (median, p20, p80), the peak RSS, the bytes
autograd saves for backward, and, over ``--epochs`` simulated epochs of ``--steps`` steps, the
RSS after each epoch (it must stay flat).

Run: ``python -m benchmarks.pyramidflow_step [--size 256] [--out FILE.json]``.
"""

from __future__ import annotations

import argparse
import json

import torch

from flowkit.models.pyramidflow import PyramidFlow

from .common import peak_rss_bytes, print_table, run_isolated, stamp, time_call, write_json


def _saved_bytes(model: PyramidFlow, images: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model.loss(images)
    loss.backward()
    return total


def measure(memory_saving: bool, size: int, batch: int, repeats: int, epochs: int,
            steps: int) -> dict:
    """One configuration, in this process."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = PyramidFlow(image_size=size, memory_saving=memory_saving).to(device).train()
    optimizer = torch.optim.Adam(model.trainable_parameters(), **{
        k: v for k, v in model.optimizer_settings().items() if k != "clip_grad_norm"})
    images = torch.rand(batch, 3, size, size, device=device)

    def step() -> None:
        optimizer.zero_grad()
        model.loss(images).backward()
        optimizer.step()

    saved = _saved_bytes(model, images)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = time_call(step, repeats=repeats)
    rss_per_epoch = []
    for _ in range(epochs):
        for _ in range(steps):
            step()
        rss_per_epoch.append(round(peak_rss_bytes() / 2**20))
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else peak_rss_bytes()
    return {
        "memory saving": memory_saving,
        "size": size,
        "batch": batch,
        "step s": round(times["median"], 3),
        "p20 s": round(times["p20"], 3),
        "p80 s": round(times["p80"], 3),
        "saved MB": round(saved / 2**20, 1),
        "peak MB": round(peak / 2**20),
        "peak MB per epoch": rss_per_epoch,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3, help="simulated epochs for the RSS trend")
    parser.add_argument("--steps", type=int, default=3, help="steps per simulated epoch")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--one", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    settings = [args.size, args.batch, args.repeats, args.epochs, args.steps]
    if args.one:
        print(json.dumps(measure(args.one == "on", *settings)))
        return
    info = stamp()
    print(f"# PyramidFlow training step on {info['device']} (torch {info['torch']}, "
          f"commit {info['commit']}, {info['date']}); L=4, C=16, 4 stacks, 7x7, batch "
          f"{args.batch}, {args.size} px")
    flags = [f"--{k}={v}" for k, v in zip(("size", "batch", "repeats", "epochs", "steps"),
                                           settings, strict=True)]
    rows = [run_isolated("benchmarks.pyramidflow_step", [*flags, "--one", mode])
            for mode in ("off", "on")]
    rows[1]["time vs plain"] = round(rows[1]["step s"] / rows[0]["step s"], 2)
    rows[0]["time vs plain"] = 1.0
    print_table(rows, list(rows[1]))
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
