"""Bad input gets a clear error at the first call, naming what was wrong and the fix."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowkit
from flowkit import layers

from .catalogue import small_subnet


@pytest.mark.parametrize(
    "layer",
    [
        layers.AffineCoupling(4, small_subnet),
        layers.AdditiveCoupling(4, small_subnet),
        layers.InvConv1x1(4),
        layers.ActNorm(4),
        layers.Permute(4),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_wrong_channel_count_names_both_counts(layer: flowkit.Flow) -> None:
    with pytest.raises(flowkit.FlowInputError, match="built for 4 channels.*3 channels"):
        layer(torch.randn(2, 3, 4, 4))


@pytest.mark.parametrize("layer", [layers.Squeeze(2), layers.HaarDownsample()])
def test_sizes_that_cannot_be_split_name_the_nearest_valid_ones(layer: flowkit.Flow) -> None:
    with pytest.raises(flowkit.FlowInputError, match="5x4.*5 -> 4 or 6"):
        layer(torch.randn(1, 2, 5, 4))


def test_tuple_of_the_wrong_length() -> None:
    flow = flowkit.Parallel(layers.ActNorm(2), layers.ActNorm(2))
    with pytest.raises(flowkit.FlowInputError, match="tuple of 2 tensors.*tuple of 3"):
        flow(tuple(torch.randn(1, 2, 2, 2) for _ in range(3)))
    with pytest.raises(flowkit.FlowInputError, match="single Tensor.*flowkit.Parallel"):
        layers.ActNorm(2)((torch.randn(1, 2, 2, 2),))


def test_a_module_without_inverse_cannot_be_placed_in_a_flow() -> None:
    with pytest.raises(flowkit.InverseNotAvailable, match="element 1 is a Conv2d"):
        flowkit.Sequential(layers.ActNorm(2), nn.Conv2d(2, 2, 1))


def test_a_flow_without_inverse_says_so() -> None:
    class ForwardOnly(flowkit.Flow):
        def forward(self, x):
            return x, torch.zeros(x.shape[0])

    with pytest.raises(flowkit.InverseNotAvailable, match="neither inverse"):
        ForwardOnly().inverse(torch.randn(1, 2))


def test_subnet_of_the_wrong_shape_is_named() -> None:
    coupling = layers.AffineCoupling(4, lambda c_in, c_out: nn.Conv2d(c_in, c_out, 3))
    with pytest.raises(ValueError, match="keep the spatial size"):
        coupling(torch.randn(1, 4, 8, 8))


@pytest.mark.parametrize(("clamp", "fn"), [(-1.0, "atan"), (2.0, "sigmoid")])
def test_bad_clamp_settings(clamp: float, fn: str) -> None:
    with pytest.raises(ValueError, match="clamp"):
        layers.AffineCoupling(4, small_subnet, clamp=clamp, clamp_fn=fn)


def test_split_sections_must_add_up() -> None:
    with pytest.raises(ValueError, match="needs 5 channels, got 4"):
        flowkit.Split([2, 3])(torch.randn(1, 4, 2, 2))


def test_debug_mode_names_the_block_with_nan() -> None:
    flow = flowkit.Sequential(layers.ActNorm(2), layers.Permute(2))
    x = torch.randn(2, 2, 3, 3)
    flow(x)  # initializes ActNorm; the check is opt-in, so NaN passes silently outside it
    x[0, 0, 0, 0] = float("nan")
    flow(x)
    with flowkit.debug_mode(), pytest.raises(flowkit.NonFiniteError, match="block 0 \\(ActNorm\\)"):
        flow(x)


def test_normalizing_flow_refuses_injective_flows() -> None:
    class Duplicate(flowkit.InjectiveFlow):
        def forward(self, x):
            return (x, x), torch.zeros(x.shape[0])

        def inverse(self, y):
            return y[0]

    with pytest.raises(flowkit.InverseNotAvailable, match="not bijective"):
        flowkit.NormalizingFlow(flowkit.Sequential(Duplicate()))
