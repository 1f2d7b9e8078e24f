"""check_flow must catch each kind of broken layer, naming the property that fails."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit.testing import check_flow


class Scale(flowkit.Flow):
    """``y = 2x`` with a configurable mistake."""

    def __init__(self, bug: str = "") -> None:
        super().__init__()
        self.bug = bug
        self.weight = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x * self.weight
        if self.bug == "batch":  # invertible, but sample i depends on all samples
            y = y + 0.1 * x.mean(0, keepdim=True)
        logdet = torch.log(self.weight) * x[0].numel() * torch.ones(x.shape[0], dtype=x.dtype)
        if self.bug == "logdet":
            logdet = logdet + 0.01
        if self.bug == "logdet-shape":
            logdet = logdet.sum()
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        if self.bug == "batch":
            mean = y.mean(0, keepdim=True) / (self.weight + 0.1)
            return (y - 0.1 * mean) / self.weight
        x = y / self.weight
        return x * (1 + 1e-3) if self.bug == "inverse" else x


def test_a_correct_layer_passes() -> None:
    report = check_flow(Scale(), torch.randn(3, 2, 3, 3).double())
    assert report.logdet_error < 1e-10 and report.inverse_error < 1e-12


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        ("inverse", "inverse\\(forward\\(x\\)\\) == x"),
        ("logdet", "logdet == log\\|det J\\|"),
        ("logdet-shape", "one value per sample"),
        ("batch", "sample i independent of sample j"),
    ],
)
def test_each_broken_layer_fails_with_the_property_named(bug: str, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_flow(Scale(bug), torch.randn(3, 2, 3, 3).double())


def test_too_large_inputs_for_the_jacobian_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        check_flow(Scale(), torch.randn(2, 3, 32, 32).double())
