"""``flowkit predict``: maps, overlays and verdicts for new images, judged by thresholds from
the normal training images; bad inputs get one-line errors and leave nothing behind."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import io as skio

from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.cli.predict import PREDICTIONS_FILE
from flowkit.models.data import GOOD, read_image, write_synthetic
from flowkit.models.data.item import make_item
from flowkit.models.engine.checkpoint import load_model
from flowkit.models.engine.config import DataSettings, RunConfig
from flowkit.models.engine.map_png import MAP_PNG_MAX, read_map_png
from flowkit.models.engine.run_folder import RunFolder, RunMode
from flowkit.models.engine.thresholds import THRESHOLD_QUANTILE, Thresholds, read_thresholds
from flowkit.models.engine.training import TrainOptions, train

from ..threads import one_thread
from ..tiny_model import TINY, TinyAutoencoder

pytestmark = pytest.mark.usefixtures("single_thread")

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunFolder]:
    """A one-epoch run of the tiny model with two levels (sizes must be even)."""
    model = TinyAutoencoder(levels=2)
    config = RunConfig(TINY, dict(model.config), DataSettings("synthetic", None, "brick", SIZE),
                       epochs=1, batch_size=4, seed=0, optimizer=dict(model.optimizer_settings()))
    run = RunFolder.prepare(tmp_path_factory.mktemp("predict") / "run", RunMode.NEW)
    with one_thread():
        train(config, run, TrainOptions(torch.device("cpu"), progress=False, quiet=True))
    yield run


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Test images at 64 px (predict resizes them): ``good/``, one folder per defect."""
    root = write_synthetic(tmp_path_factory.mktemp("images"), ["brick"], image_size=64,
                           num_train=1, num_test_good=2, num_test_per_defect=1)
    return root / "brick" / "test"


def _predict(run: RunFolder, *args: str) -> int:
    return main(["predict", str(run.root), *args])


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_predict_a_folder_end_to_end(trained: RunFolder, images: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _predict(trained, str(images), "--recursive", "--format", "both",
                    "--out", str(out)) == 0
    thresholds = read_thresholds(trained.threshold)
    assert thresholds.quantile == THRESHOLD_QUANTILE and thresholds.num_images == 48
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert record["threshold"]["image"] == thresholds.image and "rule" in record["threshold"]
    assert record["display_range"] == list(thresholds.map_range)
    files = sorted(images.rglob("*.png"))
    assert [entry["image"] for entry in record["images"]] == [str(f) for f in files]

    model = load_model(trained.final_checkpoint)
    printed = capsys.readouterr().out
    assert f"above {thresholds.image:.6g} is anomalous" in printed
    for entry, path in zip(record["images"], files, strict=True):
        name = path.relative_to(images).with_suffix("")
        assert entry["files"] == {"map_png": f"{name}_map.png", "map_npy": f"{name}_map.npy",
                                  "overlay": f"{name}_overlay.png"}
        image = make_item(read_image(path), None, GOOD, str(path), (SIZE, SIZE)).image
        expected_map, expected_score = model.predict(image[None])
        saved = np.load(out / entry["files"]["map_npy"])
        assert saved.dtype == np.float32 and saved.shape == (SIZE, SIZE)
        np.testing.assert_allclose(saved, expected_map[0, 0].numpy(), rtol=1e-6, atol=1e-7)
        assert entry["score"] == pytest.approx(float(expected_score[0]), rel=1e-6)
        assert entry["anomalous"] == (entry["score"] > thresholds.image)
        png = skio.imread(out / entry["files"]["map_png"])
        assert png.dtype == np.uint16 and png.shape == (SIZE, SIZE)
        low, high = entry["map_png_range"]
        assert low <= min(thresholds.map_range[0], saved.min())
        assert high >= max(thresholds.map_range[1], saved.max())
        step = (high - low) / MAP_PNG_MAX
        np.testing.assert_allclose(read_map_png(out / entry["files"]["map_png"]), saved,
                                   rtol=0, atol=step / 2 + 1e-6 * (high - low))
        overlay = skio.imread(out / entry["files"]["overlay"])
        assert overlay.ndim == 3 and overlay.shape[-1] in (3, 4)
        verdict = "ANOMALOUS" if entry["anomalous"] else "normal"
        assert re.search(rf"{verdict}\s+{re.escape(str(path))}$", printed, re.M)


def test_files_gray_and_rgba_images_another_size_and_npy_only(
    trained: RunFolder, tmp_path: Path
) -> None:
    gray, rgba = tmp_path / "gray.png", tmp_path / "rgba.tif"
    skio.imsave(gray, np.linspace(0, 255, 40 * 50).reshape(40, 50).astype(np.uint8))
    skio.imsave(rgba, np.full((20, 20, 4), 200, np.uint8), check_contrast=False)
    out = tmp_path / "out"
    assert _predict(trained, str(gray), str(rgba), "--image-size", "16", "--format", "npy",
                    "--out", str(out)) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "gray_map.npy", "gray_overlay.png", PREDICTIONS_FILE, "rgba_map.npy", "rgba_overlay.png"]
    assert np.load(out / "gray_map.npy").shape == (16, 16)


def test_a_run_without_thresholds_gets_them_from_its_training_images(
    trained: RunFolder, images: Path, tmp_path: Path
) -> None:
    run = RunFolder(tmp_path / "old-run")
    shutil.copytree(trained.root, run.root)
    run.threshold.unlink()
    assert _predict(run, str(images / GOOD), "--out", str(tmp_path / "out")) == 0
    assert read_thresholds(run.threshold) == read_thresholds(trained.threshold)


def test_thresholds_put_the_pixel_threshold_at_mid_scale() -> None:
    thresholds = Thresholds(image=1.0, pixel=0.5, map_min=-0.5, quantile=0.9, num_images=3)
    low, high = thresholds.map_range
    assert (thresholds.pixel - low) / (high - low) == 0.5


def _corrupt(folder: Path) -> Path:
    bad = folder / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return bad


@pytest.mark.parametrize(
    ("inputs", "flags", "message"),
    [
        (["{images}/good", "{tmp}/broken.png"], [], r"cannot read image .*broken\.png"),
        (["{tmp}/notes.txt"], [], r"cannot read image .*notes\.txt"),
        (["{tmp}/missing"], [], r"missing does not exist; pass image files or folders"),
        (["{tmp}/empty"], [], r"no images in .*empty: expected files ending in \.png"),
        (["{images}"], [], r"no images in .*test: .*; pass --recursive"),
        (["{images}/good"], ["--image-size", "31"], r"height 31 is not a multiple of 2.*30 or 32"),
        (["{images}/good", "{images}/hole"], [], r"would both be written as 000"),
    ],
)
def test_bad_inputs_get_one_line_and_write_nothing(
    trained: RunFolder, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    inputs: list[str], flags: list[str], message: str,
) -> None:
    _corrupt(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    before = sorted(tmp_path.rglob("*")), sorted(trained.root.rglob("*"))
    out = tmp_path / "out"
    paths = [i.format(images=images, tmp=tmp_path) for i in inputs]
    assert _predict(trained, *paths, *flags, "--out", str(out)) == EXIT_ERROR
    assert re.search(message, _error_line(capsys))
    assert (sorted(tmp_path.rglob("*")), sorted(trained.root.rglob("*"))) == before


def test_an_existing_output_folder(trained: RunFolder, images: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert _predict(trained, str(images / GOOD), "--out", str(out)) == 0
    capsys.readouterr()
    assert _predict(trained, str(images / "hole"), "--out", str(out)) == EXIT_ERROR
    assert "exists; pass --overwrite" in _error_line(capsys)
    assert _predict(trained, str(images / "hole"), "--out", str(out), "--overwrite") == 0
    assert [e["image"] for e in json.loads((out / PREDICTIONS_FILE).read_text())["images"]] \
        == [str(images / "hole" / "000.png")]
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "chapter.tex").write_text("years of work")
    capsys.readouterr()
    assert _predict(trained, str(images / GOOD), "--out", str(thesis), "--overwrite") \
        == EXIT_ERROR
    assert "does not hold the output of flowkit predict" in _error_line(capsys)
    assert (thesis / "chapter.tex").read_text() == "years of work"


def test_a_strongly_anomalous_image_is_not_clipped(trained: RunFolder, tmp_path: Path) -> None:
    """A map far above the run's display range gets a wider scale, not a white PNG."""
    image = tmp_path / "loud.png"
    noise = np.random.default_rng(0).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    skio.imsave(image, noise, check_contrast=False)
    out = tmp_path / "out"
    assert _predict(trained, str(image), "--format", "both", "--out", str(out), "--quiet") == 0
    saved = np.load(out / "loud_map.npy")
    display_high = read_thresholds(trained.threshold).map_range[1]
    assert saved.max() > 2 * display_high  # the case this test is about
    png = skio.imread(out / "loud_map.png")
    assert (png == MAP_PNG_MAX).sum() <= 2  # only the maximum reaches the top
    low, high = json.loads((out / PREDICTIONS_FILE).read_text())["images"][0]["map_png_range"]
    np.testing.assert_allclose(read_map_png(out / "loud_map.png"), saved, rtol=0,
                               atol=(high - low) / MAP_PNG_MAX)


def test_another_image_size_than_training_is_warned(
    trained: RunFolder, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _predict(trained, str(images / GOOD), "--image-size", "16", "--out", str(out)) == 0
    assert (f"warning: --image-size 16 differs from the training size {SIZE}"
            in capsys.readouterr().err)
    record = json.loads((out / PREDICTIONS_FILE).read_text())
    assert (record["image_size"], record["training_image_size"]) == (16, SIZE)
    assert _predict(trained, str(images / GOOD), "--out", str(tmp_path / "same")) == 0
    assert "warning" not in capsys.readouterr().err
