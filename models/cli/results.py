"""Evaluating a run's final model (and its best-on-validation model, if it has one) and
printing their metrics, for ``train`` and ``eval``."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..base import AnomalyModel
from ..data import Item, Split
from ..engine.checkpoint import load_checkpoint, model_from_checkpoint
from ..engine.config import RunConfig
from ..engine.evaluate import (
    LEGACY_PRO_NOTE,
    METRIC_LABELS,
    Evaluation,
    compute_metrics,
    predict_dataset,
    write_metrics,
)
from ..engine.files import read_json, write_json
from ..engine.memory import inference_advice, memory_advice
from ..engine.preflight import check_test_split, scan_images
from ..engine.run_folder import RunFolder
from ..engine.training import TrainOptions
from ..engine.validation import VALIDATION_KEY, SelectBy, best_record
from ..engine.visualize import save_curves, save_heatmaps
from ..errors import CheckpointError, ConfigError

__all__ = ["BEST_KEY", "evaluate_run", "print_best", "print_results"]

BEST_KEY = "best"
"""The section of ``metrics.json`` with the best-on-validation model's test metrics."""


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


def print_best(config: RunConfig, record: dict[str, Any]) -> None:
    """Print the best-on-validation model's table, if ``record`` (``metrics.json``) has one."""
    best = record.get(BEST_KEY)
    if best is None:
        return
    scores = best[VALIDATION_KEY]
    print()
    print_results(f"{config.model} on {config.data.name}, best on validation: epoch "
                  f"{best['epoch']} of {config.epochs} ({best['selected_by']} "
                  f"{scores[best['selected_by']]:.4f} on the held-out training images with "
                  f"pasted defects): {best['checkpoint']}", best)


def _test_metrics(model: AnomalyModel, dataset: Dataset[Item], config: RunConfig,
                  options: TrainOptions, batch_size: int) -> tuple[Evaluation, dict[str, float]]:
    """A model's maps on the test split, and their metrics."""
    with memory_advice("evaluating", inference_advice(batch_size, options.device)):
        evaluation = predict_dataset(model, dataset, batch_size, options.device,
                                     options.workers)
    try:
        return evaluation, compute_metrics(evaluation)
    except ValueError as error:  # both classes are checked above: non-finite maps remain
        raise ConfigError(
            f"cannot compute the metrics on the test split of {config.data.name}: {error}"
        ) from error


def _best_section(config: RunConfig, run: RunFolder, options: TrainOptions, batch_size: int,
                  dataset: Dataset[Item]) -> dict[str, Any] | None:
    """The test metrics of ``best.pt`` with its epoch and validation scores; ``None`` for a
    run without a validated epoch.

    Raises:
        CheckpointError: ``best.pt`` is missing, unreadable, or not the epoch
            ``history.json`` records as the best.
    """
    history = read_json(run.history) if run.history.is_file() else []
    best = best_record(history, config.select_by)
    if best is None:
        return None
    advice = ("best.pt is written during training, when an epoch scores best on validation, "
              f"and cannot be rebuilt after it: train again with --out {run.root} --overwrite")
    checkpoint = load_checkpoint(run.best_checkpoint, config.model, advice)
    if checkpoint["epoch"] != best["epoch"]:
        raise CheckpointError(f"{run.best_checkpoint} holds epoch {checkpoint['epoch']}, but "
                              f"{run.history} records epoch {best['epoch']} as the best; "
                              f"{advice}")
    model = model_from_checkpoint(checkpoint, run.best_checkpoint, advice).to(options.device)
    evaluation, metrics = _test_metrics(model, dataset, config, options, batch_size)
    keys = [choice.value for choice in SelectBy] + ["image_auroc"]
    return {**metrics, "images_per_second": evaluation.images_per_second,
            "epoch": best["epoch"], "selected_by": SelectBy(config.select_by).value,
            VALIDATION_KEY: {key: best[VALIDATION_KEY][key] for key in keys},
            "checkpoint": str(run.best_checkpoint.relative_to(run.root))}


def evaluate_run(model: AnomalyModel, config: RunConfig, run: RunFolder, options: TrainOptions,
                 batch_size: int) -> dict[str, Any]:
    """Evaluate the final model on the test split; write metrics.json, heat maps, curves.

    With a best-on-validation model (``checkpoints/best.pt``), it is evaluated too, and its
    metrics, epoch and validation scores form the ``best`` section of ``metrics.json``; the
    heat maps and curves stay those of the final model.

    Returns:
        The record written to ``metrics.json``.

    Raises:
        ConfigError: a test split without normal or defective images, non-finite maps.
        CheckpointError: ``best.pt`` is missing or not the best epoch of ``history.json``.
        DatasetError: a missing folder or an unreadable file.
        OutOfMemoryError: with the flags that use less.
    """
    dataset = config.data.dataset(Split.TEST.value)
    check_test_split(dataset, config.data.name)
    scan_images(dataset)
    evaluation, metrics = _test_metrics(model, dataset, config, options, batch_size)
    record = write_metrics(run.metrics, metrics, evaluation, options.device,
                           run.final_checkpoint.relative_to(run.root))
    save_heatmaps(run.heatmaps, dataset, evaluation)
    save_curves(run.curves, evaluation, metrics)
    best = _best_section(config, run, options, batch_size, dataset)
    if best is not None:
        record[BEST_KEY] = best
        write_json(run.metrics, record)
    return record
