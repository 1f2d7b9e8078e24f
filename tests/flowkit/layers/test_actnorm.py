"""ActNorm's init: safe on constant channels, global under torch.distributed (2 gloo processes)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings

import flowkit
from flowkit import layers
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst

from ...gloo import free_port, gloo_process, spawn


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.0, 5.0, -1e4])
def test_a_constant_channel_gets_a_finite_unit_scale(dtype: torch.dtype, value: float) -> None:
    x = torch.randn(4, 3, 5, 5) * 2 + 1
    x[:, 1] = value
    x = x.to(dtype)
    norm = layers.ActNorm(3).to(dtype)
    y, logdet = norm(x)
    assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    assert float(norm.log_scale.detach()[1]) == 0.0, "a constant channel keeps scale 1"
    assert float(y.detach()[:, 1].abs().max()) == 0.0, "and is centered"
    spread = y[:, [0, 2]].double().std((0, 2, 3), unbiased=False)
    tolerance = 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5
    torch.testing.assert_close(spread, torch.ones(2, dtype=torch.float64), atol=tolerance, rtol=0)


@settings(max_examples=10, deadline=None)
@given(seed=fst.seeds(), shape=fst.image_shapes(channels=3, min_batch=1, max_batch=3, min_size=1))
def test_init_normalizes_every_channel_with_spread(seed: int, shape) -> None:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=torch.float64) * 3 - 2
    norm = layers.ActNorm(3).double()
    y, _ = norm(x)
    has_spread = x.transpose(0, 1).flatten(1).std(1, unbiased=False) > 1e-6 * x.abs().max()
    spread = y.transpose(0, 1).flatten(1).std(1, unbiased=False)
    expected = torch.where(has_spread, 1.0, 0.0).double()
    torch.testing.assert_close(spread, expected, atol=1e-10, rtol=0)
    torch.testing.assert_close(y.transpose(0, 1).flatten(1).mean(1), torch.zeros(3).double(),
                               atol=1e-10, rtol=0)


def _uneven(x: torch.Tensor, rank: int) -> torch.Tensor:
    """Shards of 3 and 2 samples: the global statistics must weight them by their counts."""
    return x[:3] if rank == 0 else x[3:]


def data() -> torch.Tensor:
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return x * torch.tensor([1.0, 4.0, 0.2], dtype=torch.float64).view(1, 3, 1, 1) + 3


def model() -> flowkit.Sequential:
    torch.manual_seed(0)
    return perturb_parameters_(flowkit.Sequential(
        layers.ActNorm(3), layers.AffineCoupling(3, lambda a, b: layers.ConvSubnet(a, b, 4)),
        layers.ActNorm(3),
    ), 0.1).double()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_process(rank, world, port) as distributed:
        ddp = distributed.wrap(model(), torch.device("cpu"))
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
        y, logdet = ddp(_uneven(data(), rank))
        initialized = [p.detach().clone() for p in ddp.module[0].parameters()]
        (0.5 * y.square().flatten(1).sum(1) - logdet).mean().backward()
        optimizer.step()
        stepped = [p.detach() for p in ddp.module.parameters()]
        torch.save({"init": initialized, "step": stepped}, f"{out}.{rank}")


def test_init_from_the_global_batch_under_ddp(tmp_path) -> None:
    out = str(tmp_path / "params")
    spawn(_worker, (2, free_port(), out))
    ranks = [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]
    flat = data().transpose(0, 1).flatten(1)
    expected = [-flat.mean(1), -flat.std(1, unbiased=False).log()]
    for rank in ranks:
        for actual, wanted in zip(rank["init"], expected, strict=True):
            torch.testing.assert_close(actual, wanted, rtol=1e-12, atol=1e-12)
    for a, b in zip(ranks[0]["step"], ranks[1]["step"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_loading_an_uninitialized_state_re_arms_the_init() -> None:
    norm = layers.ActNorm(2)
    for _ in range(2):  # the second forward caches "initialized" on the host
        norm(torch.randn(4, 2, 3, 3) + 5)
    norm.load_state_dict(layers.ActNorm(2).state_dict())
    x = torch.randn(4, 2, 3, 3) * 3 - 1
    y, _ = norm(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    assert bool(norm.is_initialized)
