"""CS-Flow: exact flow, frozen deterministic backbones, feature cache, errors, and accuracy."""

from __future__ import annotations

import copy
import json
import sys

import pytest
import torch

from flowkit.models.base import build_model
from flowkit.models.baseline import MeanImageBaseline
from flowkit.models.cli import EXIT_ERROR, main
from flowkit.models.csflow import CSFlow, MultiScaleFeatures, nll_loss
from flowkit.models.data import SyntheticDataset
from flowkit.models.metrics import image_auroc
from flowkit.testing import check_flow, perturb_parameters_


def tiny(**overrides) -> CSFlow:
    config = dict(backbone="random", hidden=8, num_blocks=2, feature_stride=32)
    config.update(overrides)
    return CSFlow(**config)


def test_the_flow_is_exact_on_all_three_scales_with_a_per_sample_logdet() -> None:
    model = perturb_parameters_(tiny(num_blocks=1), scale=0.1)  # permutation + block (k=5)
    channels = model.features.channels
    maps = tuple(torch.randn(2, channels, n, n, dtype=torch.float64) for n in (2, 1, 1))
    report = check_flow(model.flow, maps)
    assert "logdet == log|det J| [eval]" in report.checked
    assert report.batch_independence_error == 0.0


def test_the_loss_is_the_nll_per_dimension_and_memory_saving_matches_plain_autograd() -> None:
    saving = perturb_parameters_(tiny(memory_saving=True), scale=0.1).double()
    plain = copy.deepcopy(saving)
    plain.flow.memory_saving = False
    images = torch.rand(3, 3, 128, 128, dtype=torch.float64)
    losses = []
    for model in (saving, plain):
        model.train()
        losses.append(model.loss(images))
        losses[-1].backward()
    z, logdet = plain.latents(images)
    dims = sum(t[0].numel() for t in z)
    expected = ((0.5 * sum(t.square().flatten(1).sum(1) for t in z) - logdet) / dims).mean()
    torch.testing.assert_close(nll_loss(z, logdet), expected)
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=0)
    for (name, p), q in zip(plain.named_parameters(), saving.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)


def test_features_are_extracted_once_per_training_image() -> None:
    model = tiny().train()
    calls = []
    model.features.network.register_forward_hook(lambda *_: calls.append(1))
    images = torch.rand(4, 3, 128, 128)
    model.loss(images[:2])
    model.loss(images)  # two new images: one backbone pass per scale for them only
    model.loss(images.flip(0))
    assert len(calls) == 2 * 3
    model.eval().anomaly_map(images)  # evaluation reuses the training features
    assert len(calls) == 2 * 3
    fresh = torch.rand(2, 3, 128, 128)
    maps, _ = model.predict(torch.cat([images[:1], fresh]))  # computes only the new ones
    assert len(calls) == 3 * 3 and len(model._cache) == 4  # and never fills the cache
    model.clear_feature_cache()
    torch.testing.assert_close(maps, model.anomaly_map(torch.cat([images[:1], fresh])))


@pytest.mark.parametrize(("stride", "channels"), [(32, 192), (16, 112)])
def test_lite0_features_have_the_expected_shapes_and_are_deterministic(
    stride: int, channels: int
) -> None:
    features = MultiScaleFeatures("efficientnet-lite0", stride=stride)
    assert features.size_multiple() == 4 * stride
    images = torch.rand(2, 3, 128, 128)
    first = features(images)
    n = 128 // stride
    assert [tuple(f.shape) for f in first] == [(2, channels, n >> k, n >> k) for k in range(3)]
    again = MultiScaleFeatures("efficientnet-lite0", stride=stride)(images)
    for a, b in zip(first, again, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    features.train()
    assert not any(m.training for m in features.modules())
    assert all(not p.requires_grad for p in features.parameters())


def test_b5_architecture_loads_a_local_weights_file(tmp_path) -> None:
    efficientnet_pytorch = pytest.importorskip("efficientnet_pytorch")
    network = efficientnet_pytorch.EfficientNet.from_name("efficientnet-b5", image_size=None)
    path = tmp_path / "b5.pth"
    torch.save(network.state_dict(), path)
    features = MultiScaleFeatures("efficientnet-b5", path)
    assert [tuple(f.shape) for f in features(torch.rand(1, 3, 128, 128))] == [
        (1, 304, 4, 4), (1, 304, 2, 2), (1, 304, 1, 1)]


def test_clear_errors(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="backbone-weights"):
        CSFlow(backbone="efficientnet-b5")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        CSFlow(backbone="efficientnet-b5", backbone_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="unknown backbone"):
        CSFlow(backbone="resnet")
    with pytest.raises(ValueError, match="multiple of 128.*use 128 or 256"):
        tiny(feature_stride=32).check_image_size(200, 256)
    with pytest.raises(ValueError, match="multiple of 64.*use 192 or 256"):
        tiny(feature_stride=16).check_image_size(200, 256)
    with pytest.raises(ValueError, match=r"feature stride must be one of \(16, 32\)"):
        tiny(feature_stride=8)
    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # not installed
    with pytest.raises(ImportError, match=r"pip install 'flowkit\[csflow\]'"):
        CSFlow()


def test_the_registry_builds_it_from_a_json_config() -> None:
    model = build_model("csflow", backbone="random", hidden=8, num_blocks=1, feature_stride=32)
    assert isinstance(model, CSFlow)
    assert json.loads(json.dumps(model.config)) == model.config
    assert model.optimizer_settings()["lr"] == 1e-3
    maps, scores = model.eval().predict(torch.rand(2, 3, 128, 256))
    assert maps.shape == (2, 1, 128, 256) and scores.shape == (2,)


def test_a_tiny_model_beats_the_mean_image_baseline_on_a_seeded_category() -> None:
    torch.manual_seed(0)
    data = dict(category="gravel", image_size=128, num_test_good=6, num_test_per_defect=3)
    train = torch.stack([item.image for item in SyntheticDataset(split="train", **data)])
    test = list(SyntheticDataset(split="test", **data))
    images = torch.stack([item.image for item in test])
    labels = torch.stack([item.mask.flatten().amax() for item in test]).float()

    baseline = MeanImageBaseline(levels=3, image_size=128)
    baseline.fit_normal([train])
    model = CSFlow(hidden=32, num_blocks=2)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3, eps=1e-4)
    model.train()
    for _ in range(10):
        for start in range(0, len(train), 16):
            loss = model.loss(train[start : start + 16])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    _, ours = model.eval().predict(images)
    theirs = baseline.image_score(baseline.anomaly_map(images))
    # measured: image AUROC 0.85 vs 0.39
    assert image_auroc(ours, labels) > image_auroc(theirs, labels) + 0.2


def test_the_paper_preset_names_the_missing_weights_file_and_how_to_get_it(
    tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no weights in this home's torch hub cache
    run = tmp_path / "run"
    argv = ["train", "--model", "csflow", "--preset", "paper", "--out", str(run), "--quiet"]
    assert main(argv) == EXIT_ERROR
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    expected = tmp_path / ".cache/torch/hub/checkpoints/efficientnet-b5-b6417697.pth"
    assert str(expected) in lines[0]
    assert "EfficientNet.from_pretrained('efficientnet-b5')" in lines[0]
    assert "--backbone-weights PATH" in lines[0]
    assert not run.exists()


def test_the_paper_preset_is_the_papers_settings() -> None:
    preset = CSFlow.presets["paper"]
    assert (preset["image_size"], preset["hidden"], preset["epochs"], preset["batch_size"]) == (
        768, 1024, 240, 16)
    assert (preset["backbone"], preset["feature_stride"], preset["lr"]) == (
        "efficientnet-b5", 32, 2e-4)
    assert preset["backbone_weights"].endswith("efficientnet-b5-b6417697.pth")
    # the paper's map and score, no colour channels or standardization (the CPU defaults')
    assert (preset["map_mode"], preset["map_channels"], preset["image_score"]) == (
        "finest", "mean", "mean")
    assert (preset["color_grid"], preset["standardize"]) == (0, False)


def test_a_run_written_before_the_added_arguments_reads_and_resumes_with_them() -> None:
    from flowkit.models.cli import build_parser
    from flowkit.models.cli.settings import resolve_config
    from flowkit.models.engine.config import DataSettings, RunConfig

    config = {k: v for k, v in tiny(feature_cache=0).config.items()
              if k not in CSFlow.config_added}  # what a config.json written before them holds
    old = RunConfig("csflow", config, DataSettings("synthetic", None, "nut", 128), 1, 4, 0,
                    {"lr": 1e-3})
    read = RunConfig.from_json(old.to_json())
    assert read.model_config == {**config, **CSFlow.config_added}
    # --resume without flags continues it (it was refused: "the flags change color_grid ...")
    args = build_parser().parse_args(["train", "--resume", "--out", "run"])
    assert resolve_config(args, read).model_config == read.model_config


def test_a_checkpoint_saved_before_the_added_arguments_loads_and_scores_as_it_did(
        tmp_path) -> None:
    from flowkit.models.engine.checkpoint import load_model, save_checkpoint

    # The model as an old flowkit built it: the values config_added names.
    old = perturb_parameters_(tiny(**CSFlow.config_added, feature_cache=0), scale=0.1).eval()
    path = tmp_path / "old.pt"
    save_checkpoint(path, old, None, epoch=1, step=1, run_config={})
    stored = torch.load(path, weights_only=True)
    for name in CSFlow.config_added:  # what a config written before them lacks
        del stored["model_config"][name]
    torch.save(stored, path)
    loaded = load_model(path)
    assert loaded.config == old.config
    images = torch.rand(2, 3, 128, 128)
    for got, want in zip(loaded.predict(images), old.predict(images), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # Today's defaults differ from every added value: without them the old checkpoint would
    # be rebuilt differently (refused, or scored another way).
    defaults = tiny(feature_stride=16)
    for name, value in CSFlow.config_added.items():
        assert defaults.config[name] != value, name
    # A checkpoint that stores them is rebuilt with its own values, not the added ones.
    path = tmp_path / "new.pt"
    save_checkpoint(path, defaults.eval(), None, epoch=1, step=1, run_config={})
    loaded = load_model(path)
    assert loaded.config == defaults.config
    for got, want in zip(loaded.predict(images), defaults.predict(images), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
