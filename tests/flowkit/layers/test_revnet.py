"""RevNet blocks around arbitrary networks: exact inverse, memory-saving training of a ResNet."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import flowkit
from flowkit.layers import RevNetBlock
from flowkit.testing import check_flow, perturb_parameters_

from ..plain_vs_saving import assert_saving_matches_plain, gradients, saving_copy
from ..test_reversible import assert_close_relative, saved_bytes


class Residual(nn.Module):
    """A ResNet branch: conv - GroupNorm - ReLU - conv (per-sample statistics)."""

    calls = 0

    def __init__(self, c_in: int, c_out: int, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1), nn.GroupNorm(2, hidden), nn.ReLU(),
            nn.Conv2d(hidden, c_out, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        Residual.calls += 1
        return self.body(x)


def resnet(depth: int, channels: int = 6, memory_saving: bool = False) -> flowkit.Sequential:
    half = channels // 2
    blocks = [RevNetBlock(channels, Residual(half, half), Residual(half, half))
              for _ in range(depth)]
    return flowkit.Sequential(*blocks, memory_saving=memory_saving)


def twins(depth: int, seed: int = 0) -> tuple[flowkit.Sequential, flowkit.Sequential]:
    plain = perturb_parameters_(resnet(depth), scale=0.1, seed=seed).double()
    return plain, saving_copy(plain)


def test_block_inverts_exactly_with_zero_logdet() -> None:
    block = perturb_parameters_(RevNetBlock(5, Residual(2, 3), Residual(3, 2)), scale=0.3)
    report = check_flow(block, torch.randn(2, 5, 3, 3, dtype=torch.float64))
    assert report.inverse_error < 1e-13 and report.logdet_error < 1e-10


def test_resnet_gradients_equal_plain_autograd_with_two_network_calls() -> None:
    plain, _ = twins(6)

    def reset() -> None:
        Residual.calls = 0

    assert_saving_matches_plain(plain, torch.randn(3, 6, 8, 8, dtype=torch.float64),
                                before_backward=reset)
    assert Residual.calls == 2 * 6, "the fused rebuild runs F and G once each"


def test_saved_memory_flat_in_depth() -> None:
    x = torch.randn(2, 6, 16, 16, dtype=torch.float64, requires_grad=True)
    plain2, saving2 = twins(2)
    plain16, saving16 = twins(16)
    assert saved_bytes(saving16, x) <= 1.1 * saved_bytes(saving2, x)
    assert saved_bytes(plain16, x) > 6 * saved_bytes(plain2, x)


class ConditionalMLP(nn.Module):
    def __init__(self, features: int, context: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features + context, 16), nn.Tanh(),
                                 nn.Linear(16, features))

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        return self.net(torch.cat([x, context], dim=1))


def test_conditional_blocks_route_the_context_gradient() -> None:
    blocks = [RevNetBlock(4, ConditionalMLP(2, 3), ConditionalMLP(2, 3), conditional=True)
              for _ in range(3)]
    plain = flowkit.Sequential(*blocks).double()
    x = torch.randn(5, 4, dtype=torch.float64)
    context = torch.randn(5, 3, dtype=torch.float64)
    y, _ = plain(x, context=context)
    torch.testing.assert_close(plain.inverse(y, context=context), x)
    _, context_grad, *_ = assert_saving_matches_plain(plain, x, context)
    assert context_grad.abs().max() > 0
    with pytest.raises(flowkit.FlowInputError, match="needs context"):
        blocks[0](x)


def test_bad_networks_are_named() -> None:
    with pytest.raises(TypeError, match="must be an nn.Module"):
        RevNetBlock(4, lambda x: x, nn.Identity())
    block = RevNetBlock(4, nn.Linear(2, 3), nn.Linear(2, 2))
    with pytest.raises(ValueError, match="f maps .* expected"):
        block(torch.randn(2, 4))
    with pytest.raises(flowkit.FlowInputError, match="context"):
        RevNetBlock(4, nn.Linear(2, 2), nn.Linear(2, 2))(torch.randn(2, 4), context=torch.ones(2))


def test_batchnorm_branches_train_as_in_plain_autograd() -> None:
    def branch() -> nn.Module:
        # No bias before the BatchNorm: its true gradient is 0, compared as rounding noise.
        return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                             nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))

    plain = perturb_parameters_(
        flowkit.Sequential(*(RevNetBlock(4, branch(), branch()) for _ in range(3))), seed=2
    ).double()
    saving = saving_copy(plain)
    x = torch.randn(4, 4, 6, 6, dtype=torch.float64)
    for flow in (plain, saving):
        for _ in range(2):
            y, _ = flow(x)
            y.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), saving.parameters(), strict=True):
        assert_close_relative(q.grad, p.grad, 1e-10, msg=name)
    for (name, b), c in zip(plain.named_buffers(), saving.buffers(), strict=True):
        torch.testing.assert_close(c, b, rtol=1e-12, atol=0, msg=name)


class Captures(nn.Module):
    """A branch that reads a tensor it does not own (its gradient needs the engine's care)."""

    def __init__(self, outside: Tensor) -> None:
        super().__init__()
        self.outside = outside

    def forward(self, x: Tensor) -> Tensor:
        return x * self.outside


@pytest.mark.parametrize("branch", ["f", "g"])
def test_an_outside_tensor_read_by_either_network_is_refused_by_name(branch: str) -> None:
    outside = torch.randn(1, 2, 1, 1, requires_grad=True)
    nets = {"f": nn.Conv2d(2, 2, 1), "g": nn.Conv2d(2, 2, 1), branch: Captures(outside)}
    flow = flowkit.Sequential(RevNetBlock(4, nets["f"], nets["g"]), memory_saving=True)
    y, _ = flow(torch.randn(2, 4, 3, 3))
    with pytest.raises(RuntimeError, match="depends on .* of shape \\(1, 2, 1, 1\\)"):
        y.sum().backward()


class TokenMixer(nn.Module):
    """A transformer sub-block on ``[B, C, L]`` token maps: attention, or an MLP, with LayerNorm."""

    def __init__(self, width: int, attention: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, 2, batch_first=True) if attention else None
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        tokens = self.norm(x.transpose(1, 2))
        if self.attention is not None:
            out = self.attention(tokens, tokens, tokens, need_weights=False)[0]
        else:
            out = self.mlp(tokens)
        return out.transpose(1, 2)


def test_a_reversible_transformer_stack_trains_with_memory_saving() -> None:
    def stack(depth: int) -> flowkit.Sequential:
        return flowkit.Sequential(*(
            RevNetBlock(8, TokenMixer(4, attention=True), TokenMixer(4, attention=False))
            for _ in range(depth)
        )).double()

    x = torch.randn(3, 8, 5, dtype=torch.float64)
    assert_saving_matches_plain(stack(4), x)
    shallow, deep = saving_copy(stack(2)), saving_copy(stack(12))
    assert saved_bytes(deep, x.requires_grad_()) <= 1.1 * saved_bytes(shallow, x)


def test_dropout_in_both_networks_replays_the_same_masks() -> None:
    def branch() -> nn.Module:
        return nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))

    plain = perturb_parameters_(
        flowkit.Sequential(*(RevNetBlock(6, branch(), branch()) for _ in range(3))), seed=4
    ).double()
    x = torch.randn(8, 6, dtype=torch.float64)
    results = []
    for flow in (plain, saving_copy(plain)):
        torch.manual_seed(7)
        results.append(gradients(flow, x, None))
    for g_saving, g_plain in zip(results[1], results[0], strict=True):
        assert_close_relative(g_saving, g_plain, 1e-10)
