"""CS-Flow end to end with the real EfficientNet-Lite0 weights: fit, evaluate, save, load,
predict, on a synthetic category; it must detect defects, not only run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from flowkit.models.cli import main
from flowkit.models.data import GOOD, read_image, write_synthetic
from flowkit.models.data.item import make_item
from flowkit.models.engine.checkpoint import load_model

pytestmark = pytest.mark.usefixtures("single_thread")

CATEGORY = "nut"  # an aligned object: no augmentation, so each image meets the backbone once
SIZE = 128  # stride-16 maps 8, 4, 2
TRAIN = ["train", "--model", "csflow", "--category", CATEGORY, "--image-size", str(SIZE),
         "--epochs", "12", "--batch-size", "8", "--hidden", "32", "--seed", "0", "--quiet",
         "--val-fraction", "0"]  # all 48 training images, as when the bars were measured
MIN_IMAGE_AUROC = 0.9
"""Measured 0.954 (seed 0) at these settings and the model's other defaults (colour channels,
standardized features, the channel-max map, the top-10% score); chance is 0.5, the mean-image
baseline 0.68. At 6 epochs the standardized model is not yet trained (0.63)."""
MIN_PIXEL_AUROC = 0.9
"""Measured 0.967 (seed 0); the mean-image baseline's is 0.94 at 192 px."""


def test_fit_evaluate_save_load_predict_with_the_real_lite0_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main([*TRAIN, "--out", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["image_auroc"] >= MIN_IMAGE_AUROC, metrics
    assert metrics["pixel_auroc"] >= MIN_PIXEL_AUROC, metrics

    model = load_model(run / "checkpoints" / "final.pt", expected_model="csflow")
    assert model.config["backbone"] == "efficientnet-lite0" and model.config["hidden"] == 32

    root = write_synthetic(tmp_path / "data", [CATEGORY], image_size=SIZE, num_train=0,
                           num_test_good=2, num_test_per_defect=1)
    folder = Path(root) / CATEGORY / "test"
    out = tmp_path / "predicted"
    assert main(["predict", str(run), str(folder), "--recursive", "--out", str(out),
                 "--quiet"]) == 0
    record = json.loads((out / "predictions.json").read_text())
    assert len(record["images"]) == 2 + 3  # two good images, one per defect type
    files = [Path(entry["image"]) for entry in record["images"]]
    on_disk = torch.stack([make_item(read_image(path), None, GOOD, str(path), (SIZE, SIZE)).image
                           for path in files])
    maps, expected = model.predict(on_disk)  # the reloaded model predicts what the CLI did
    assert maps.shape == (len(files), 1, SIZE, SIZE)
    threshold = record["threshold"]["image"]
    for entry, score in zip(record["images"], expected.tolist(), strict=True):
        assert entry["score"] == pytest.approx(score, rel=1e-5)
        assert entry["anomalous"] == (entry["score"] > threshold)
