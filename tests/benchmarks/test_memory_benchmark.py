"""The memory benchmark's comparisons compute what plain autograd computes, and its CLI runs.

memcnn and revlib are optional (``flowkit[bench]`` has revlib; memcnn goes in with
``pip install --no-deps memcnn``): a test of one is skipped only where it is not installed.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import flowkit
from benchmarks import memory

ROOT = Path(__file__).resolve().parents[2]


def _run(flow: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Loss, output and the gradients of the input and of every parameter, in float64."""
    x = x.clone().requires_grad_()
    y, logdet = flow(x)
    loss = memory.loss_of(y, logdet)
    loss.backward()
    return (loss.detach(), y.detach(), x.grad, *(p.grad for p in flow.parameters()))


def _plain(method: str, depth: int) -> flowkit.Sequential:
    flow = memory.build(method, depth, "cpu").double()
    assert isinstance(flow, flowkit.Sequential)
    return flow


def test_memcnn_gradients_equal_plain_autograd() -> None:
    pytest.importorskip("memcnn")
    plain = _plain("plain", depth=2)
    wrapped = memory.MemcnnSequential(copy.deepcopy(list(plain.blocks)))
    x = torch.randn(2, memory.CHANNELS, 8, 8, dtype=torch.float64)
    expected = _run(plain, x)
    actual = _run(wrapped, x)
    assert len(actual) == len(expected)
    # The logdet is carried through memcnn: the loss includes it.
    torch.testing.assert_close(actual, expected)


def test_memcnn_keeps_the_callers_input() -> None:
    pytest.importorskip("memcnn")
    flow = memory.build("memcnn", 2, "cpu")
    x = torch.randn(1, memory.CHANNELS, 8, 8)
    before = x.clone()
    memory.step(flow, x)
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_revlib_equals_flowkit_additive() -> None:
    pytest.importorskip("revlib")
    plain = _plain("plain-additive", depth=3)
    saving = flowkit.Sequential(*copy.deepcopy(list(plain.blocks)), memory_saving=True)
    couplings = [b for b in plain.blocks if isinstance(b, flowkit.layers.AdditiveCoupling)]
    revlib_net = memory.RevlibSequential(copy.deepcopy(c.subnet) for c in couplings)
    x = torch.randn(2, memory.CHANNELS, 8, 8, dtype=torch.float64)
    expected = _run(plain, x)
    # Permutations have no parameters, so the parameter order is the subnets' in both.
    torch.testing.assert_close(_run(saving, x), expected)
    torch.testing.assert_close(_run(revlib_net, x), expected)


@pytest.mark.parametrize("method", ["memory-saving", "memcnn", "memory-saving-additive", "revlib"])
def test_engines_keep_less_than_one_plain_block(method: str) -> None:
    if method in memory.OPTIONAL_ENGINES:
        pytest.importorskip(memory.OPTIONAL_ENGINES[method])
    plain_method = memory.BASELINE[memory.NETWORK[method]]
    x = torch.randn(1, memory.CHANNELS, 16, 16)
    one_plain_block = memory.saved_bytes(memory.build(plain_method, 1, "cpu"), x)
    assert 0 < memory.saved_bytes(memory.build(method, 6, "cpu"), x) < one_plain_block


@pytest.mark.slow
def test_cli_prints_a_row_per_method() -> None:
    args = [sys.executable, "-m", "benchmarks.memory", "--depths", "2", "--sizes", "16",
            "--repeats", "1"]
    out = subprocess.run(args, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    rows = [line.split("|") for line in out.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0]]
    methods = [row[header.index("method")].strip() for row in rows[1:]]
    assert methods == list(memory.METHODS)
    for name, package in memory.OPTIONAL_ENGINES.items():
        error = memory.import_error(package)
        assert (name in methods) == (error is None)
        assert f"{name}: {error or 'installed'}" in out
