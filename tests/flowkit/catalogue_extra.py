"""Catalogue entries for the density-model layers (splines, RevNet blocks, elementwise maps).

Same format as :mod:`tests.flowkit.catalogue`, which imports this module: the entries join its
``CATALOGUE``, so every property test runs over them.
"""

from __future__ import annotations

from torch import nn

import flowkit
from flowkit import layers

from .catalogue import CATALOGUE, Entry


def small_subnet(c_in: int, c_out: int) -> nn.Module:
    return layers.ConvSubnet(c_in, c_out, hidden=6, kernel_size=3)


def small_mlp(c_in: int, c_out: int) -> nn.Module:
    return layers.MLPSubnet(c_in, c_out, hidden=6, depth=2)


def revnet_block(c: int, f=small_subnet, g=small_subnet) -> layers.RevNetBlock:
    """F maps the last floor(c/2) channels to the first ceil(c/2); G the other way."""
    return layers.RevNetBlock(c, f(c // 2, c - c // 2), g(c - c // 2, c // 2))


def two_level_flow(c: int, coupling: str) -> flowkit.MultiScaleFlow:
    """A coupling and the split prior at full size; then a squeeze and a permutation. Short:
    the catalogue's float32 tolerance is a single layer's."""
    first = (layers.RQSplineCoupling(c, small_subnet, bins=4, **CONDITIONED)
             if coupling == "spline" else layers.AffineCoupling(c, small_subnet))
    kept = (c + 1) // 2
    return flowkit.MultiScaleFlow(
        flowkit.Sequential(first, layers.AffineCoupling(c, small_subnet), memory_saving=True),
        flowkit.Sequential(layers.Squeeze(2), layers.Permute(4 * kept, seed=1)),
    )


# A spline's inverse errs by ~eps * |y| / min(dy/dx). The perturbed conv subnets output raw
# parameters up to ~5, where nflows' minimums (1e-3) allow slopes near 1e-6: larger minimums
# bound the slopes so that float32 meets the catalogue's 1e-5 (float64 runs with the defaults
# in tests/flowkit/layers/test_spline.py).
CONDITIONED = {"min_bin_width": 0.1, "min_bin_height": 0.1, "min_derivative": 0.2}


EXTRA = [
    Entry(
        "RQSplineCoupling-conv",
        lambda c: layers.RQSplineCoupling(c, small_subnet, bins=4, bound=2.0, **CONDITIONED),
        min_channels=2,
    ),
    Entry(
        "RQSplineCoupling-mlp",
        lambda c: layers.RQSplineCoupling(c, small_mlp, bins=3, bound=1.5, **CONDITIONED),
        min_channels=2,
    ),
    Entry("RQSpline", lambda c: layers.RQSpline(c, bins=5, bound=2.0)),
    Entry(
        "RQSplineCoupling-stack-memory-saving",
        lambda c: flowkit.Sequential(
            layers.RQSplineCoupling(c, small_subnet, bins=4, **CONDITIONED),
            layers.Reverse(c),
            layers.RQSplineCoupling(c, small_mlp, bins=8, **CONDITIONED),
            memory_saving=True,
        ),
        min_channels=2,
    ),
    Entry(
        "RevNetBlock",
        lambda c: revnet_block(c, g=small_mlp),
        min_channels=2,
    ),
    Entry(
        "RevNetBlock-stack-memory-saving",
        lambda c: flowkit.Sequential(
            *(revnet_block(c) for _ in range(3)),
            memory_saving=True,
        ),
        min_channels=2,
    ),
    # Logit is not here: its domain is bounded, and the catalogue's inputs are normal;
    # tests/flowkit/layers/test_elementwise.py runs the same checks on data in [0, 1].
    Entry("ElementwiseAffine", lambda c: layers.ElementwiseAffine((c, 1, 1))),
    # The multi-scale mechanics (split, latents, inverse) with non-trivial layers. glow() itself
    # is checked in tests/flowkit/test_multiscale.py on 8x8 inputs: on the catalogue's 4x4 ones
    # its ActNorm would initialize from 1x1 maps (two numbers per channel) and its 1x1 convs
    # would mix 20-40 perturbed channels, whose float32 inverses exceed one layer's 1e-5.
    *(
        Entry(f"MultiScaleFlow-{kind}", lambda c, kind=kind: two_level_flow(c, kind),
              min_channels=2, multiple_of=2)
        for kind in ("affine", "spline")
    ),
]

CATALOGUE.extend(EXTRA)
