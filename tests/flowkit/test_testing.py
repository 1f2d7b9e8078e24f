"""check_flow must catch each kind of broken layer, naming the property that fails."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit import layers
from flowkit.testing import check_flow, check_memory_saving, default_tolerance


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
        if self.bug == "logdet-5e-5":  # a small relative error: the old 1e-4 tolerance let it by
            logdet = logdet * (1 + 5e-5)
        if self.bug == "logdet-shape":
            logdet = logdet.sum()
        return y, logdet

    def inverse(self, y: Tensor) -> Tensor:
        if self.bug == "batch":
            mean = y.mean(0, keepdim=True) / (self.weight + 0.1)
            return (y - 0.1 * mean) / self.weight
        x = y / self.weight
        return x * (1 + 1e-3) if self.bug == "inverse" else x


class DetachedCoupling(flowkit.Flow):
    """``y2 = x2 * exp(s(x1))`` whose scale is detached: inverse and logdet right, backward
    wrong (it misses d y2 / d x1), as with a detached batch statistic."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(0.7))

    def _scale(self, x1: Tensor) -> Tensor:
        return torch.tanh(self.weight * x1).detach()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x.chunk(2, dim=1)
        s = self._scale(x1)
        return torch.cat([x1, x2 * s.exp()], dim=1), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y.chunk(2, dim=1)
        return torch.cat([y1, y2 * (-self._scale(y1)).exp()], dim=1)


class BatchMeanScale(Scale):
    """Scaled by exp of a batch statistic of the other half in training (volume
    normalization's coupling), a constant in eval: the samples are coupled in training only."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x.chunk(2, dim=1)
        s = x1.mean(0, keepdim=True) if self.training else torch.zeros_like(x1[:1])
        s = s.expand_as(x1) - s.mean()
        return torch.cat([x1, x2 * s.exp()], dim=1), s.flatten(1).sum(1)

    def inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y.chunk(2, dim=1)
        s = y1.mean(0, keepdim=True) if self.training else torch.zeros_like(y1[:1])
        s = s.expand_as(y1) - s.mean()
        return torch.cat([y1, y2 * (-s).exp()], dim=1)


def test_a_correct_layer_passes() -> None:
    report = check_flow(Scale(), torch.randn(3, 2, 3, 3).double())
    assert report.logdet_error < 1e-10 and report.inverse_error < 1e-12
    assert report.gradient_error < 1e-8
    for mode in ("train", "eval"):
        assert f"logdet == log|det J| [{mode}]" in report.checked
        assert f"autograd == finite differences [{mode}]" in report.checked


def test_a_batch_statistic_in_training_is_checked_on_the_whole_batch() -> None:
    report = check_flow(BatchMeanScale(), torch.randn(3, 2, 3, 3).double())
    assert report.logdet_error < 1e-10
    assert "samples independent [train]" not in report.checked


@pytest.mark.parametrize(
    ("flow", "modes", "message"),
    [
        (Scale("inverse"), ("train", "eval"), "inverse\\(forward\\(x\\)\\) == x"),
        (Scale("logdet"), ("train", "eval"), "logdet == log\\|det J\\|' failed in train"),
        (Scale("logdet"), ("eval",), "logdet == log\\|det J\\|' failed in eval"),
        (Scale("logdet-5e-5"), ("train", "eval"), "logdet == log\\|det J\\|"),
        (Scale("logdet-shape"), ("train", "eval"), "one value per sample"),
        (Scale("batch"), ("eval",), "sample i independent of sample j"),
        (Scale("batch"), ("train",), "logdet == log\\|det J\\|' failed in train"),
        (DetachedCoupling(), ("train", "eval"), "autograd == finite differences"),
    ],
    ids=["inverse", "logdet-train", "logdet-eval", "logdet-5e-5", "logdet-shape", "batch-eval",
         "batch-train", "detached"],
)
def test_each_broken_layer_fails_with_the_property_named(flow, modes, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_flow(flow, torch.randn(3, 2, 3, 3).double(), modes=modes)


class _ReluSubnet(nn.Module):
    """(s, t) = (relu(x1) / 2, relu(x1)): piecewise linear, with a kink at x1 = 0."""

    def forward(self, x1: Tensor) -> Tensor:
        return torch.cat([x1.relu() / 2, x1.relu()], dim=1)


def test_a_kink_next_to_the_input_is_not_taken_for_a_wrong_gradient() -> None:
    # x1 sits 3e-7 from the ReLU's kink: a 1e-6 central difference straddles it (error ~0.25),
    # though autograd's derivative is right; check_flow must not fail a correct layer there.
    flow = layers.AffineCoupling(2, lambda c_in, c_out: _ReluSubnet())
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64)
    x[:, 0] = 3e-7
    report = check_flow(flow, x)
    assert report.gradient_error < 1e-6


def test_float32_tolerances_are_per_dtype() -> None:
    assert default_tolerance(torch.float64) <= 1e-10 and default_tolerance(torch.float32) <= 1e-5
    report = check_flow(Scale(), torch.randn(3, 2, 3, 3))
    assert report.inverse_error < default_tolerance(torch.float32)


def test_too_large_inputs_for_the_jacobian_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        check_flow(Scale(), torch.randn(2, 3, 32, 32).double())


class DetachedRebuild(layers.AffineCoupling):
    """A fused rebuild that drops the logdet's graph: its gradient path is lost."""

    def rebuild(self, y, context=None):
        rebuilt = super().rebuild(y, context)
        rebuilt.logdet = rebuilt.logdet.detach()
        return rebuilt


def test_check_memory_saving_catches_a_wrong_engine_and_one_that_never_ran() -> None:
    def subnet(a: int, b: int) -> nn.Module:
        return layers.ConvSubnet(a, b, 6)

    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    good = flowkit.testing.perturb_parameters_(flowkit.Sequential(
        layers.AffineCoupling(4, subnet), layers.Reverse(4), memory_saving=True)).double()
    report = check_memory_saving(good, x)
    assert report.param_grad_error < 1e-10 and report.input_grad_error < 1e-10
    bad = flowkit.testing.perturb_parameters_(flowkit.Sequential(
        DetachedRebuild(4, subnet), layers.Reverse(4), memory_saving=True)).double()
    with pytest.raises(AssertionError, match="check_memory_saving"):
        check_memory_saving(bad, x)
    with pytest.raises(AssertionError, match="did not run"):
        check_memory_saving(flowkit.Inverse(good), x)
    with pytest.raises(ValueError, match="no Sequential with memory_saving=True"):
        check_memory_saving(layers.AffineCoupling(4, subnet), x)
