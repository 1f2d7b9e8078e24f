"""Evaluating a run's final model and printing its metrics, for ``train`` and ``eval``."""

from __future__ import annotations

from typing import Any

from ..base import AnomalyModel
from ..data import Split
from ..engine.config import RunConfig
from ..engine.evaluate import (
    LEGACY_PRO_NOTE,
    METRIC_LABELS,
    compute_metrics,
    predict_dataset,
    write_metrics,
)
from ..engine.memory import inference_advice, memory_advice
from ..engine.preflight import check_test_split, scan_images
from ..engine.run_folder import RunFolder
from ..engine.training import TrainOptions
from ..engine.visualize import save_curves, save_heatmaps
from ..errors import ConfigError

__all__ = ["evaluate_run", "print_results"]


def print_results(title: str, record: dict[str, Any]) -> None:
    """Print the metrics as an aligned table on stdout."""
    rows = [(label, f"{record[key]:.4f}") for key, label in METRIC_LABELS.items()]
    rows.append(("images/s (model only)", f"{record['images_per_second']:.1f}"))
    width = max(len(name) for name, _ in rows)
    value_width = max(len(value) for _, value in rows)
    print(title)
    print(f"| {'metric'.ljust(width)} | {'value'.rjust(value_width)} |")
    print(f"|{'-' * (width + 2)}|{'-' * (value_width + 2)}|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value.rjust(value_width)} |")
    print(f"({LEGACY_PRO_NOTE})")


def evaluate_run(model: AnomalyModel, config: RunConfig, run: RunFolder, options: TrainOptions,
                 batch_size: int) -> dict[str, Any]:
    """Evaluate the final model on the test split; write metrics.json, heat maps, curves.

    Returns:
        The record written to ``metrics.json``.

    Raises:
        ConfigError: a test split without normal or defective images, non-finite maps.
        DatasetError: a missing folder or an unreadable file.
        OutOfMemoryError: with the flags that use less.
    """
    dataset = config.data.dataset(Split.TEST.value)
    check_test_split(dataset, config.data.name)
    scan_images(dataset)
    with memory_advice("evaluating", inference_advice(batch_size, options.device)):
        evaluation = predict_dataset(model, dataset, batch_size, options.device,
                                     options.workers)
    try:
        metrics = compute_metrics(evaluation)
    except ValueError as error:  # both classes are checked above: non-finite maps remain
        raise ConfigError(
            f"cannot compute the metrics on the test split of {config.data.name}: {error}"
        ) from error
    record = write_metrics(run.metrics, metrics, evaluation, options.device,
                           run.final_checkpoint.relative_to(run.root))
    save_heatmaps(run.heatmaps, dataset, evaluation)
    save_curves(run.curves, evaluation, metrics)
    return record
