"""How well finished runs find each defect kind: the metrics per kind of a run's test set.

    python -m benchmarks.synthetic_difficulty RUN_DIR [RUN_DIR ...]

For each run folder (``flowkit train --out RUN_DIR``) the final model scores the run's test
split again; each defect kind is measured on the normal test images together with that kind's
images (image AUROC, pixel AUROC, AUPRO@0.3), and ``all`` on the whole split (equal to the
run's ``metrics.json``). Prints one Markdown table, a row per run and kind.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from flowkit.models.data import GOOD, Split
from flowkit.models.engine.evaluate import Evaluation, predict_dataset
from flowkit.models.engine.trained_run import load_run
from flowkit.models.metrics import DEFAULT_FPR_LIMIT, aupro, image_auroc, pixel_auroc

from .common import print_table

__all__ = ["ALL_KINDS", "kind_metrics", "main"]

ALL_KINDS = "all"
"""The row of the whole test split."""

COLUMNS = ("category", "model", "epochs", "kind", "image AUROC", "pixel AUROC", "AUPRO@0.3")


def kind_metrics(evaluation: Evaluation) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC and AUPRO@0.3 per defect kind and for the whole split.

    Args:
        evaluation: maps, scores and ground truth of a test split (``predict_dataset``).

    Returns:
        ``{kind: {"image_auroc", "pixel_auroc", "aupro_0.3"}}``, the kinds sorted, then
        :data:`ALL_KINDS`; a kind is measured on the normal images with its own.

    Raises:
        ValueError: the split has no normal image or no defective one.
    """
    defects = list(evaluation.defects)
    if GOOD not in defects or set(defects) == {GOOD}:
        raise ValueError("kind_metrics needs a test split with normal and defective images, "
                         f"got the kinds {sorted(set(defects))}")
    kinds = sorted(set(defects) - {GOOD})
    result = {}
    for kind in [*kinds, ALL_KINDS]:
        keep = torch.tensor([d in (GOOD, kind) or kind == ALL_KINDS for d in defects])
        maps, masks = evaluation.maps[keep], evaluation.masks[keep]
        result[kind] = {
            "image_auroc": image_auroc(evaluation.scores[keep], evaluation.labels[keep]),
            "pixel_auroc": pixel_auroc(maps, masks),
            "aupro_0.3": aupro(maps, masks, DEFAULT_FPR_LIMIT),
        }
    return result


def main(argv: Sequence[str] | None = None) -> None:
    """Print the per-kind table of the given run folders."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders")
    args = parser.parse_args(argv)
    rows = []
    for path in args.runs:
        run = load_run(path)
        test = run.config.data.dataset(Split.TEST.value)
        evaluation = predict_dataset(run.model, test, run.config.batch_size, run.device)
        for kind, values in kind_metrics(evaluation).items():
            rows.append({"category": run.config.data.name, "model": run.config.model,
                         "epochs": run.config.epochs, "kind": kind,
                         "image AUROC": f"{values['image_auroc']:.3f}",
                         "pixel AUROC": f"{values['pixel_auroc']:.3f}",
                         "AUPRO@0.3": f"{values['aupro_0.3']:.3f}"})
    print_table(rows, COLUMNS)


if __name__ == "__main__":
    main()
