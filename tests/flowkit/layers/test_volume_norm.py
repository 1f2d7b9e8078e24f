"""VolumeNorm's statistics: the batch mean in training (with its gradient), the running mean it
keeps (momentum, once per step, resized for CVN), and the running mean in eval."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings

import flowkit
from flowkit.layers import VolumeNorm
from flowkit.testing import strategies as fst

DIMS = {"channel": (0, 1), "spatial": (0, 2, 3)}


@pytest.mark.parametrize("mode", ["channel", "spatial"])
@settings(max_examples=8, deadline=None)
@given(seed=fst.seeds(), shape=fst.image_shapes(channels=3, min_size=2, max_size=5))
def test_training_subtracts_the_batch_mean_and_updates_the_running_mean(mode, seed, shape):
    generator = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=generator, dtype=torch.float64) + 2
    norm = VolumeNorm(mode, channels=3, size=tuple(shape[-2:]), momentum=0.3).double()
    mean = s.mean(DIMS[mode], keepdim=True)
    torch.testing.assert_close(norm(s), s - mean, rtol=0, atol=1e-14)
    torch.testing.assert_close(norm.running_mean, 0.3 * mean, rtol=0, atol=1e-14)
    with flowkit.core.recomputing():
        norm(s + 1)
    torch.testing.assert_close(norm.running_mean, 0.3 * mean, rtol=0, atol=1e-14)
    norm(s + 1)
    torch.testing.assert_close(norm.running_mean, 0.3 * 0.7 * mean + 0.3 * (mean + 1),
                               rtol=0, atol=1e-14)
    norm.eval()
    torch.testing.assert_close(norm(s), s - norm.running_mean, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["channel", "spatial"])
def test_the_batch_mean_is_differentiated_through(mode: str) -> None:
    """d(s - mean(s))/ds = I - 1/n: a detached mean would give I, silently."""
    s = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    norm = VolumeNorm(mode, channels=3, size=(4, 4)).double()
    weights = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    (norm(s) * weights).sum().backward()
    expected = weights - weights.mean(DIMS[mode], keepdim=True)
    torch.testing.assert_close(s.grad, expected, rtol=0, atol=1e-14)


def test_the_channel_mean_is_resized_to_the_map_at_hand() -> None:
    norm = VolumeNorm("channel", channels=2, size=(4, 4)).double()
    big = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    norm(big)
    update = F.interpolate(big.mean((0, 1), keepdim=True), size=(4, 4), mode="bilinear",
                           align_corners=False)
    torch.testing.assert_close(norm.running_mean, 0.1 * update, rtol=0, atol=1e-14)
    assert norm.running_mean.shape == (1, 1, 4, 4)
    norm.eval()
    resized = F.interpolate(norm.running_mean, size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(norm(big), big - resized, rtol=0, atol=0)
