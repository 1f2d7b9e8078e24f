"""The catalogue of layers every property test runs over: one line adds a layer to all of them.

Each entry builds a layer for a given channel count and says which input shapes it takes.
Subnets are perturbed away from their zero init by the tests, so no layer is an identity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

import flowkit
from flowkit import layers


def small_subnet(c_in: int, c_out: int) -> nn.Module:
    return layers.ConvSubnet(c_in, c_out, hidden=6, kernel_size=3)


@dataclass(frozen=True)
class Entry:
    """A layer factory and the inputs it takes."""

    name: str
    build: Callable[[int], flowkit.Flow]
    multiple_of: int = 1
    min_channels: int = 1
    multiscale: int = 0  # number of scales of a tuple state; 0 for a single tensor


CATALOGUE = [
    Entry("AffineCoupling-atan", lambda c: layers.AffineCoupling(c, small_subnet), min_channels=2),
    Entry(
        "AffineCoupling-tanh",
        lambda c: layers.AffineCoupling(c, small_subnet, clamp=1.5, clamp_fn="tanh"),
        min_channels=2,
    ),
    Entry("AdditiveCoupling", lambda c: layers.AdditiveCoupling(c, small_subnet), min_channels=2),
    Entry("InvConv1x1-lu", lambda c: layers.InvConv1x1(c)),
    Entry("InvConv1x1-plain", lambda c: layers.InvConv1x1(c, lu=False)),
    Entry("InvConv1x1-volume-norm", lambda c: layers.InvConv1x1(c, volume_norm=True)),
    Entry("ActNorm", lambda c: layers.ActNorm(c)),
    Entry("Permute", lambda c: layers.Permute(c, seed=3)),
    Entry("Reverse", lambda c: layers.Reverse(c)),
    Entry("Squeeze", lambda c: layers.Squeeze(2), multiple_of=2),
    Entry("HaarDownsample", lambda c: layers.HaarDownsample(), multiple_of=2),
    Entry(
        "Sequential",
        lambda c: flowkit.Sequential(
            layers.ActNorm(c), layers.AffineCoupling(c, small_subnet), layers.InvConv1x1(c)
        ),
        min_channels=2,
    ),
    Entry(
        "Sequential-memory-saving",
        lambda c: flowkit.Sequential(
            layers.AffineCoupling(c, small_subnet), layers.Reverse(c), memory_saving=True
        ),
        min_channels=2,
    ),
    Entry(
        "Inverse",
        lambda c: flowkit.Inverse(layers.AffineCoupling(c, small_subnet)),
        min_channels=2,
    ),
    *(
        Entry(
            f"PyramidCoupling-{kind}-{norm}",
            lambda c, kind=kind, norm=norm: layers.PyramidCoupling(
                kind, level=0, levels=3, channels=c, kernel_size=3, volume_norm=norm,
                target_size=(2, 2),
            ),
            multiscale=3,
        )
        for kind in ("up", "down", "dual")
        for norm in ("channel", "spatial")
    ),
    Entry(
        "PyramidCoupling-stack-memory-saving",
        lambda c: flowkit.Sequential(
            layers.PyramidCoupling("dual", 0, 3, c, kernel_size=3),
            layers.PyramidCoupling("up", 0, 3, c, kernel_size=3, volume_norm="spatial"),
            layers.PyramidCoupling("down", 1, 3, c, kernel_size=3),
            memory_saving=True,
        ),
        multiscale=3,
    ),
    *(
        Entry(
            f"CrossScaleCoupling-{half}",
            lambda c, half=half: layers.CrossScaleCoupling(c, hidden=6, active=half),
            min_channels=2,
            multiscale=3,
        )
        for half in ("first", "second")
    ),
    Entry(
        "CrossScaleBlock-stack-memory-saving",
        lambda c: flowkit.Sequential(
            flowkit.Parallel(*(layers.Permute(c, seed=k) for k in range(3))),
            *layers.CrossScaleBlock(c, hidden=6),
            flowkit.Parallel(*(layers.Permute(c, seed=3 + k) for k in range(3))),
            *layers.CrossScaleBlock(c, hidden=6, kernel_size=5, clamp=1.5),
            memory_saving=True,
        ),
        min_channels=2,
        multiscale=3,
    ),
    Entry(
        "Parallel",
        lambda c: flowkit.Parallel(layers.AffineCoupling(c, small_subnet), layers.ActNorm(c)),
        min_channels=2,
        multiscale=2,
    ),
]
from . import catalogue_extra  # noqa: E402, F401  (its entries join CATALOGUE)
