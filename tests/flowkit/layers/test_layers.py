"""Layer-specific behaviour beyond the shared properties of the catalogue."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit
from flowkit import layers
from flowkit.testing import strategies as fst

from ..catalogue import small_subnet


@settings(max_examples=10)
@given(channels=st.integers(2, 9))
def test_coupling_splits_odd_channels_ceil_floor(channels: int) -> None:
    coupling = layers.AffineCoupling(channels, small_subnet)
    assert coupling.subnet.conv1.in_channels == (channels + 1) // 2
    assert coupling.subnet.conv2.out_channels == 2 * (channels // 2)


def test_coupling_starts_as_identity_and_passive_half_is_copied() -> None:
    coupling = layers.AffineCoupling(5, small_subnet)
    x = torch.randn(2, 5, 4, 4)
    y, logdet = coupling(x)
    torch.testing.assert_close(y, x)
    assert torch.equal(logdet, torch.zeros(2))
    flowkit.testing.perturb_parameters_(coupling)
    y, _ = coupling(x)
    assert torch.equal(y[:, :3], x[:, :3]) and not torch.allclose(y[:, 3:], x[:, 3:])


def test_actnorm_initializes_once_on_the_first_training_batch() -> None:
    norm = layers.ActNorm(3)
    x = torch.randn(8, 3, 5, 5) * torch.tensor([1.0, 3.0, 0.5]).view(1, 3, 1, 1) + 2
    y, _ = norm(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    params = [p.clone() for p in norm.parameters()]
    norm(x * 10)
    assert all(torch.equal(a, b) for a, b in zip(params, norm.parameters(), strict=True))


def test_actnorm_initialization_survives_a_checkpoint() -> None:
    trained = layers.ActNorm(2)
    trained(torch.randn(4, 2, 3, 3) + 5)
    fresh = layers.ActNorm(2)
    fresh.load_state_dict(trained.state_dict())
    before = fresh.bias.clone()
    fresh(torch.randn(4, 2, 3, 3))
    assert torch.equal(fresh.bias, before)


def test_actnorm_in_eval_mode_does_not_initialize() -> None:
    norm = layers.ActNorm(2).eval()
    norm(torch.randn(4, 2, 3, 3) + 5)
    assert not bool(norm.is_initialized)


@settings(max_examples=10)
@given(channels=st.integers(1, 8), seed=fst.seeds())
def test_volume_normalized_conv1x1_preserves_volume(channels: int, seed: int) -> None:
    torch.manual_seed(seed)
    conv = flowkit.testing.perturb_parameters_(layers.InvConv1x1(channels, volume_norm=True))
    with torch.no_grad():
        weight, logabsdet = conv.weight_and_logabsdet()
    assert abs(float(logabsdet)) < 1e-5
    assert abs(float(torch.linalg.slogdet(weight.double())[1])) < 1e-4


def test_conv1x1_works_on_any_rank() -> None:
    conv = layers.InvConv1x1(3)
    for shape in [(2, 3), (2, 3, 7), (2, 3, 2, 2, 2)]:
        x = torch.randn(shape)
        y, _ = conv(x)
        torch.testing.assert_close(conv.inverse(y), x, rtol=1e-5, atol=1e-5)


def test_haar_of_a_constant_is_pure_low_pass() -> None:
    y, _ = layers.HaarDownsample()(torch.full((1, 2, 4, 4), 3.0))
    torch.testing.assert_close(y[:, :2], torch.full((1, 2, 2, 2), 6.0))
    assert torch.equal(y[:, 2:], torch.zeros(1, 6, 2, 2))


def test_squeeze_matches_pixel_unshuffle_and_rejects_bad_inverse_input() -> None:
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = layers.Squeeze(2)(x)
    assert torch.equal(y, torch.nn.functional.pixel_unshuffle(x, 2))
    with pytest.raises(ValueError, match="Squeeze.inverse"):
        layers.Squeeze(2).inverse(torch.randn(1, 3, 2, 2))


def test_permutations_are_buffers_restored_by_a_checkpoint() -> None:
    a, b = layers.Permute(10, seed=1), layers.Permute(10, seed=2)
    assert not torch.equal(a.permutation, b.permutation)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, 10)
    assert torch.equal(a(x)[0], b(x)[0])
    assert torch.equal(layers.Reverse(4).permutation, torch.tensor([3, 2, 1, 0]))
