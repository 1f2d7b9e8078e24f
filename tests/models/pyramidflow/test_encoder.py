"""The ResNet-18 stem loads a torchvision-layout state dict from a local file and stays frozen."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flowkit.models.pyramidflow import PyramidFlow
from flowkit.models.pyramidflow.encoder import _BasicBlock


def torchvision_like_state_dict() -> dict[str, torch.Tensor]:
    """What ``torchvision.models.resnet18().state_dict()`` holds for conv1..layer1, plus a head."""
    stem = nn.Module()
    stem.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
    stem.bn1 = nn.BatchNorm2d(64)
    stem.layer1 = nn.Sequential(_BasicBlock(64), _BasicBlock(64))
    with torch.no_grad():
        for name, buffer in stem.named_buffers():
            if name.endswith("running_var"):
                buffer.uniform_(0.5, 2.0)
    return {**stem.state_dict(), "fc.weight": torch.zeros(1000, 512)}


def test_resnet18_encoder_loads_and_its_batchnorms_never_move(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    state = torchvision_like_state_dict()
    torch.save(state, path)
    model = PyramidFlow(encoder="resnet18", encoder_weights=str(path), levels=2, num_stack=1,
                        kernel_size=3, image_size=32)
    assert torch.equal(model.encoder.bn1.running_var, state["bn1.running_var"])
    assert model.size_multiple() == 8
    images = torch.rand(2, 3, 32, 32)
    assert model.features(images).shape == (2, 64, 8, 8)
    model.train()
    model.loss(images).backward()
    assert not model.encoder.training
    assert torch.equal(model.encoder.bn1.running_mean, state["bn1.running_mean"])
