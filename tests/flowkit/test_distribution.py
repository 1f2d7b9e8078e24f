"""NormalizingFlow: log-density by change of variables, sampling by the inverse."""

import math

import torch

import flowkit
from flowkit import layers

from .catalogue import small_subnet


def test_log_prob_is_base_density_plus_logdet() -> None:
    flow = flowkit.Sequential(layers.ActNorm(3), layers.AffineCoupling(3, small_subnet))
    model = flowkit.NormalizingFlow(flow)
    x = torch.randn(4, 3, 2, 2)
    z, logdet = flow(x)
    expected = (-0.5 * z.square() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1) + logdet
    torch.testing.assert_close(model.log_prob(x), expected)


def test_log_prob_of_an_affine_flow_is_the_gaussian_density() -> None:
    flow = layers.ActNorm(1)
    with torch.no_grad():
        flow.log_scale.fill_(math.log(2.0))
        flow.is_initialized.fill_(True)
    model = flowkit.NormalizingFlow(flow)
    x = torch.randn(5, 1, 1)  # then z = 2x: x ~ N(0, 1/4) under the model
    expected = torch.distributions.Normal(0.0, 0.5).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_prob(x), expected)


def test_samples_are_inverse_images_of_base_samples() -> None:
    flow = flowkit.Parallel(layers.InvConv1x1(2), layers.InvConv1x1(2))
    model = flowkit.NormalizingFlow(flow, flowkit.StandardNormal(((2, 4, 4), (2, 2, 2))))
    torch.manual_seed(3)
    samples = model.sample(5)
    torch.manual_seed(3)
    z = model.base.sample(5)
    assert [s.shape for s in samples] == [(5, 2, 4, 4), (5, 2, 2, 2)]
    back, _ = flow(samples)
    for b, zz in zip(back, z, strict=True):
        torch.testing.assert_close(b, zz, rtol=1e-5, atol=1e-5)
