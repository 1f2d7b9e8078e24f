"""``flowkit predict RUN IMAGES --out DIR``: anomaly maps, overlays and verdicts for new
images."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..engine.checkpoint import load_model
from ..engine.files import atomic_folder, write_json
from ..engine.memory import inference_advice, memory_advice
from ..engine.predict import (
    OutputFormat,
    Prediction,
    find_images,
    predict_images,
    predictions_record,
)
from ..engine.run_folder import RunFolder, Trained
from ..engine.signals import StopSignals
from ..engine.thresholds import Thresholds
from ..engine.trained_run import run_thresholds
from ..errors import ConfigError
from .common import (
    add_common_flags,
    add_inference_flags,
    check_replaceable,
    options_of,
    positive_int,
    single_process,
)

__all__ = ["DESCRIPTION", "PREDICTIONS_FILE", "add_arguments", "run"]

PREDICTIONS_FILE = "predictions.json"

DESCRIPTION = (
    "Run a run's final model on image files or folders. Writes, per image, the anomaly map "
    "(a 16-bit PNG on a linear scale stored in its text chunks and in predictions.json, never "
    "clipped; and/or float32 .npy) and an overlay PNG, and "
    f"{PREDICTIONS_FILE} with every image's score and verdict; an image is anomalous when its "
    "score exceeds the threshold fitted on the run's normal training images (threshold.json)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``flowkit predict``."""
    add_common_flags(parser)
    parser.add_argument("run_dir", metavar="RUN", help="a run folder of `flowkit train`")
    parser.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files, and folders of images")
    parser.add_argument("--out", metavar="DIR", required=True, help="the output folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the --out folder of an earlier prediction")
    parser.add_argument("--recursive", action="store_true",
                        help="also take the images in sub-folders of the folders given")
    parser.add_argument("--format", choices=[f.value for f in OutputFormat],
                        default=OutputFormat.PNG.value,
                        help="anomaly-map files: 16-bit PNG, float32 .npy, or both "
                        "(default: %(default)s; the overlay PNG is always written)")
    parser.add_argument("--checkpoint", choices=[t.value for t in Trained],
                        default=Trained.FINAL.value,
                        help="the final model, or the best epoch on validation (runs trained "
                        "with --val-fraction; its thresholds are best_threshold.json) "
                        "(default: %(default)s)")
    parser.add_argument("--image-size", type=positive_int, metavar="PX",
                        help="images are resized to PX x PX (default: the run's)")
    add_inference_flags(parser)


def _print_predictions(predictions: Sequence[Prediction], thresholds: Thresholds,
                       out: Path) -> None:
    """The threshold, one line per image (score, verdict, file), and a summary."""
    print(f"threshold: an image score above {thresholds.image:.6g} is anomalous (the "
          f"{thresholds.quantile} quantile of the {thresholds.num_images} normal training "
          "images' scores)")
    print(f"{'score':>12}  {'verdict':9}  image")
    for prediction in predictions:
        verdict = "ANOMALOUS" if prediction.anomalous else "normal"
        print(f"{prediction.score:12.6g}  {verdict:9}  {prediction.image}")
    anomalous = sum(p.anomalous for p in predictions)
    print(f"{anomalous} of {len(predictions)} images anomalous; maps, overlays and "
          f"{PREDICTIONS_FILE} in {out}")


def run(args: argparse.Namespace, stop: StopSignals) -> int:
    """``flowkit predict RUN IMAGES --out DIR``: nothing is written unless every image is
    predicted (the output folder is filled under a temporary name, then renamed)."""
    single_process("predict")
    folder = RunFolder.open(args.run_dir)
    config = folder.read_config()
    out = Path(args.out)
    check_replaceable(out, args.overwrite, lambda folder: (folder / PREDICTIONS_FILE).is_file(),
                      f"the output of flowkit predict (no {PREDICTIONS_FILE})")
    images = find_images(args.images, args.recursive)
    options = options_of(args)
    checkpoint, threshold_file, advice = folder.trained(args.checkpoint)
    model = load_model(checkpoint, options.device, expected_model=config.model, advice=advice)
    size = args.image_size or config.data.image_size
    try:
        model.check_image_size(size, size)
    except ValueError as error:
        raise ConfigError(f"--image-size {size}: {error}") from error
    if size != config.data.image_size:
        print(f"warning: --image-size {size} differs from the training size "
              f"{config.data.image_size}: the model and its thresholds were fitted at "
              f"{config.data.image_size} px, so scores and verdicts may shift", file=sys.stderr)
    batch_size = args.batch_size or config.batch_size
    with memory_advice("predicting", inference_advice(batch_size, options.device)):
        thresholds, fitted = run_thresholds(folder, config, model, options.device, batch_size,
                                            options.workers, threshold_file)
        with atomic_folder(out) as temporary:
            predictions = predict_images(model, images, temporary, thresholds, size, batch_size,
                                         options.device, args.format, options.workers,
                                         options.progress)
            write_json(temporary / PREDICTIONS_FILE, predictions_record(
                predictions, thresholds, run=str(folder.root),
                checkpoint=str(checkpoint), model=config.model, image_size=size,
                training_image_size=config.data.image_size))
    if fitted:
        write_json(threshold_file, thresholds.to_json())
    _print_predictions(predictions, thresholds, out)
    return 0
