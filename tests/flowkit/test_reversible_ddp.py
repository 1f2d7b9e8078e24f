"""The memory-saving engine under DistributedDataParallel: 2 gloo processes on the CPU."""

from __future__ import annotations

import torch

import flowkit
from flowkit.testing import perturb_parameters_

from ..gloo import free_port, gloo_process, spawn
from .test_reversible import coupling_stack

BATCH = 4


def build() -> flowkit.Sequential:
    torch.manual_seed(0)
    flow = flowkit.Sequential(*coupling_stack(3), memory_saving=True)
    return perturb_parameters_(flow, scale=0.1).double()


def data() -> torch.Tensor:
    return torch.randn(BATCH, 4, 6, 6, generator=torch.Generator().manual_seed(1)).double()


def mean_loss(flow: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    y, logdet = flow(x)
    return (0.5 * y.square().flatten(1).sum(1) - logdet).mean()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    with gloo_process(rank, world, port) as distributed:
        model = distributed.wrap(build(), torch.device("cpu"))
        shard = data().chunk(world)[rank]
        mean_loss(model, shard).backward()
        if rank == 0:
            torch.save([p.grad for p in model.module.parameters()], out)


def test_ddp_gradients_equal_single_process(tmp_path) -> None:
    out = str(tmp_path / "grads.pt")
    spawn(_worker, (2, free_port(), out))
    distributed = torch.load(out, weights_only=True)
    single = build()
    mean_loss(single, data()).backward()
    for g_ddp, p in zip(distributed, single.parameters(), strict=True):
        torch.testing.assert_close(g_ddp, p.grad, rtol=1e-10, atol=1e-12)
