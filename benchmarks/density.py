"""flowkit's spline flow against zuko's on the two-moons density: held-out NLL and time.

Both fit the same standardized data (``examples/moons_spline.py``'s ``load_moons``) with the
same loop (Adam, same steps, batch and learning rate, same minibatch order) and the same shape:
4 spline transforms of 8 bins, MLPs with two hidden layers of 64. zuko's ``NSF`` is
autoregressive, which for 2 features is a coupling like ours. zuko is optional
(``pip install zuko``; it needs only torch and numpy): without it only flowkit's row is printed.

Usage: ``python -m benchmarks.density [--steps 600] [--seeds 0 1 2] [--json out.json]``
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch

from .common import print_table, stamp, write_json

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("moons_spline", ROOT / "examples" /
                                                  "moons_spline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_flowkit(example, train, test, steps: int, seed: int) -> dict:
    torch.manual_seed(seed)
    model = example.build_model()
    model.flow(train[: example.BATCH])
    seconds = example.fit(model.log_prob, list(model.parameters()), train, steps=steps,
                          seed=seed)
    model.eval()
    return {"nll": example.nll(model.log_prob, test), "seconds": seconds,
            "parameters": sum(p.numel() for p in model.parameters())}


def run_zuko(example, train, test, steps: int, seed: int) -> dict | None:
    try:
        import zuko
    except ImportError:
        return None
    torch.manual_seed(seed)
    flow = zuko.flows.NSF(2, transforms=4, bins=8, hidden_features=(64, 64))

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        return flow().log_prob(x)

    seconds = example.fit(log_prob, list(flow.parameters()), train, steps=steps, seed=seed)
    return {"nll": example.nll(log_prob, test), "seconds": seconds,
            "parameters": sum(p.numel() for p in flow.parameters()),
            "version": zuko.__version__}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    example = _example()
    results: dict[str, list[dict]] = {"flowkit": [], "zuko": []}
    for seed in args.seeds:
        train, test = example.load_moons(seed=seed)
        results["flowkit"].append(run_flowkit(example, train, test, args.steps, seed))
        zuko_result = run_zuko(example, train, test, args.steps, seed)
        if zuko_result is not None:
            results["zuko"].append(zuko_result)
    rows = []
    for library, runs in results.items():
        if not runs:
            continue
        nlls = [r["nll"] for r in runs]
        rows.append({
            "library": library + (f" {runs[0]['version']}" if "version" in runs[0] else ""),
            "parameters": runs[0]["parameters"],
            "steps": args.steps,
            "held-out NLL (nats)": round(statistics.mean(nlls), 3),
            "NLL min..max": f"{min(nlls):.3f}..{max(nlls):.3f}",
            "ms per step": round(1000 * statistics.median(r["seconds"] for r in runs)
                                 / args.steps, 1),
        })
    print(stamp())
    print_table(rows, list(rows[0]))
    if args.json:
        write_json(args.json, rows)
    return rows


if __name__ == "__main__":
    main()
