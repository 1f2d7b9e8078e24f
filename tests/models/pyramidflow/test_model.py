"""PyramidFlow: exact flow, the paper's structure, training state, and accuracy over a baseline."""

from __future__ import annotations

import copy

import pytest
import torch

from flowkit.models.baseline import MeanImageBaseline
from flowkit.models.data import SyntheticDataset
from flowkit.models.metrics import aupro, pixel_auroc
from flowkit.models.pyramidflow import PyramidFlow, block_order, defaults_for
from flowkit.testing import check_flow, perturb_parameters_


def tiny(**overrides) -> PyramidFlow:
    config = dict(channels=3, levels=3, num_stack=1, kernel_size=3, image_size=8)
    config.update(overrides)
    return PyramidFlow(**config)


def test_block_order_matches_the_official_red_black_order() -> None:
    assert block_order(2) == [("down", 0), ("up", 0)]
    assert block_order(4) == [("dual", 0), ("down", 2), ("up", 0), ("dual", 1)]
    assert block_order(8) == [("dual", 0), ("dual", 2), ("dual", 4), ("down", 6), ("up", 0),
                              ("dual", 1), ("dual", 3), ("dual", 5)]
    for levels in range(2, 9):  # every level is transformed exactly once per stack
        targets = sorted(lvl if kind == "up" else lvl + 1 for kind, lvl in block_order(levels))
        assert targets == list(range(levels))


def test_per_category_defaults_of_the_paper() -> None:
    assert defaults_for("screw") == {"levels": 2, "volume_norm": "channel"}
    assert defaults_for("transistor") == {"levels": 8, "volume_norm": "spatial"}
    assert defaults_for("bottle") == {"levels": 4, "volume_norm": "spatial"}
    assert defaults_for("brick") == {"levels": 4, "volume_norm": "channel"}


@pytest.mark.parametrize("volume_norm", ["channel", "spatial"])
def test_the_flow_is_exact_and_the_whole_model_a_left_inverse(volume_norm: str) -> None:
    model = tiny(volume_norm=volume_norm, num_stack=2)
    perturb_parameters_(model.flow, scale=0.1)
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64)  # levels 4x4, 2x2, 1x1: a small Jacobian
    with torch.no_grad():
        levels, _ = model.pyramid(model.double().features(x))
    report = check_flow(model.flow, levels)
    assert "logdet == log|det J| [eval]" in report.checked
    assert check_flow(model.as_flow(), x).inverse_error < 1e-10


def test_memory_saving_gives_the_gradients_and_statistics_of_plain_autograd() -> None:
    saving = perturb_parameters_(tiny(num_stack=2, image_size=16), scale=0.1).double()
    plain = copy.deepcopy(saving)
    plain.flow.memory_saving = False
    x = torch.rand(3, 3, 16, 16, dtype=torch.float64)
    for model in (saving, plain):
        model.train()
        model.loss(x).backward()
    for (name, p), q in zip(plain.named_parameters(), saving.parameters(), strict=True):
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=name)
    for (name, a), b in zip(plain.named_buffers(), saving.buffers(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14, msg=name)  # updated once


def test_the_encoder_is_frozen_and_stays_in_eval_mode() -> None:
    model = tiny().train()
    assert not model.encoder.training
    assert all(not p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.trainable_parameters())


def test_a_checkpoint_evaluates_at_another_resolution() -> None:
    model = tiny(image_size=16)
    model.fit_normal([torch.rand(4, 3, 16, 16)])
    fresh = tiny(image_size=16)
    fresh.load_state_dict(model.state_dict())
    fresh.eval()
    assert fresh.anomaly_map(torch.rand(1, 3, 32, 24)).shape == (1, 1, 32, 24)


def test_clear_errors() -> None:
    model = tiny(image_size=16)
    with pytest.raises(ValueError, match="at least 2"):
        model.loss(torch.rand(1, 3, 16, 16))
    with pytest.raises(RuntimeError, match="fit_normal"):
        model.eval().anomaly_map(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of 4.*use 12 or 16"):
        model.check_image_size(16, 14)
    with pytest.raises(ValueError, match="encoder-weights"):
        PyramidFlow(encoder="resnet18")


def test_a_tiny_model_beats_the_mean_image_baseline_on_a_seeded_category() -> None:
    torch.manual_seed(0)
    data = dict(category="brick", image_size=64, num_test_good=6, num_test_per_defect=3)
    train = torch.stack([item.image for item in SyntheticDataset(split="train", **data)])
    test = list(SyntheticDataset(split="test", **data))
    images = torch.stack([item.image for item in test])
    masks = torch.stack([item.mask for item in test])

    baseline = MeanImageBaseline(levels=3, image_size=64)
    baseline.fit_normal([train])
    model = PyramidFlow(channels=8, levels=3, num_stack=1, kernel_size=5, image_size=64)
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=2e-3, betas=(0.5, 0.9))
    model.train()
    for start in range(0, len(train) - 1, 4):
        loss = model.loss(train[start : start + 4])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.fit_normal([train])
    ours, theirs = model.eval().anomaly_map(images), baseline.anomaly_map(images)
    # measured: pixel AUROC 0.993 vs 0.915, AUPRO 0.986 vs 0.903
    assert pixel_auroc(ours, masks) > pixel_auroc(theirs, masks) + 0.05
    assert aupro(ours, masks) > aupro(theirs, masks) + 0.05
