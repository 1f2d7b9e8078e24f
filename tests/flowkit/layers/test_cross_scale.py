"""CS-Flow's cross-scale coupling: identity start, exact inverse (unlike the public versions),
per-sample logdet, and the fused rebuild of the memory-saving engine."""

from __future__ import annotations

import copy

import pytest
import torch

import flowkit
from flowkit.kernels.soft_clamp import soft_clamp
from flowkit.layers import CrossConvolutions, CrossScaleBlock, CrossScaleCoupling, Permute
from flowkit.testing import check_flow, perturb_parameters_


def state(batch: int = 2, channels: int = 4, size: int = 8, dtype=torch.float64):
    return tuple(torch.randn(batch, channels, size >> k, size >> k, dtype=dtype)
                 for k in range(3))


def test_zero_gammas_make_the_block_start_as_the_identity() -> None:
    x = state(dtype=torch.float32)
    net = CrossConvolutions(2, hidden=8, out_channels=4)
    assert all(torch.equal(o, torch.zeros_like(o)) for o in net(tuple(t[:, :2] for t in x)))
    y, logdet = CrossScaleBlock(4, hidden=8)(x)
    assert all(torch.equal(a, b) for a, b in zip(x, y, strict=True))
    assert torch.equal(logdet, torch.zeros(2))


def _public_inverse(block: CrossScaleBlock, y: tuple[torch.Tensor, ...]):
    """The inverse of the official code and anomalib: undoing the first coupling, it takes the
    shift from the *second* coupling's subnet output (``t02 = r01[:, split:]``)."""
    first, second = block
    middle = second.inverse(y)  # the second coupling is undone correctly
    split = first.split
    scale_params = first.subnet(tuple(t[:, split:] for t in middle))
    wrong_params = second.subnet(tuple(t[:, :split] for t in y))
    x = []
    for t, h, h_wrong in zip(middle, scale_params, wrong_params, strict=True):
        s = soft_clamp(h[:, :split], first.clamp)
        shift = h_wrong[:, split:]
        x.append(torch.cat([(t[:, :split] - shift) * torch.exp(-s), t[:, split:]], dim=1))
    return tuple(x)


def test_the_public_versions_inverse_bug_fails_our_check_and_ours_passes() -> None:
    block = perturb_parameters_(CrossScaleBlock(4, hidden=8), scale=0.2).double()
    x = state()
    with torch.no_grad():
        y, _ = block(x)
        ours = block.inverse(y)
        theirs = _public_inverse(block, y)
    worst = max(float((a - b).abs().max() / b.abs().max()) for a, b in zip(ours, x, strict=True))
    assert worst < 1e-12
    wrong = max(float((a - b).abs().max() / b.abs().max())
                for a, b in zip(theirs, x, strict=True))
    assert wrong > 1e-2  # measured 0.68 with these weights
    check_flow(block, state(size=4))


def test_logdet_is_per_sample_not_summed_over_the_batch() -> None:
    block = perturb_parameters_(CrossScaleBlock(4, hidden=8), scale=0.2).double()
    x = state(batch=3)
    _, logdet = block(x)
    singles = torch.cat([block(tuple(t[i : i + 1] for t in x))[1] for i in range(3)])
    assert logdet.shape == (3,)
    torch.testing.assert_close(logdet, singles, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(logdet[0], logdet[1])


def test_the_block_is_two_couplings_conditioned_in_turn() -> None:
    block = perturb_parameters_(CrossScaleBlock(5, hidden=8), scale=0.2).double()
    x = state(channels=5)
    y, _ = block(x)
    for a, b in zip(x, y, strict=True):  # every channel of every scale is transformed
        assert ((a - b).abs().flatten(2).amax(2) > 1e-6).all()
    assert [layer.active.value for layer in block] == ["first", "second"]


def _stack(memory_saving: bool) -> flowkit.Sequential:
    layers = []
    for k in range(2):
        layers.append(flowkit.Parallel(*(Permute(4, seed=3 * k + s) for s in range(3))))
        layers.extend(CrossScaleBlock(4, hidden=8, kernel_size=3 + 2 * k))
    return flowkit.Sequential(*layers, memory_saving=memory_saving)


def test_memory_saving_gives_the_gradients_of_plain_autograd_with_one_subnet_pass() -> None:
    saving = perturb_parameters_(_stack(memory_saving=True), scale=0.2).double()
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    x = state()
    grads = []
    calls = []
    for flow in (saving, plain):
        inputs = tuple(t.clone().requires_grad_() for t in x)
        z, logdet = flow(inputs)
        if flow is saving:  # count subnet passes in the backward only
            hooks = [m.register_forward_hook(lambda *_: calls.append(1))
                     for m in flow.modules() if isinstance(m, CrossConvolutions)]
        loss = sum(0.5 * t.square().sum() for t in z) - logdet.sum()
        loss.backward()
        if flow is saving:
            for hook in hooks:
                hook.remove()
        grads.append([t.grad for t in inputs] + [p.grad for p in flow.parameters()])
    assert len(calls) == 4  # one per coupling: the fused rebuild
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)


def test_clear_errors() -> None:
    block = CrossScaleCoupling(4, hidden=8)
    with pytest.raises(ValueError, match="half the size"):
        block((torch.randn(1, 4, 8, 8), torch.randn(1, 4, 3, 3), torch.randn(1, 4, 2, 2)))
    with pytest.raises(ValueError, match="tuple of 3"):
        block(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="channels"):
        block(state(channels=6))
    with pytest.raises(ValueError, match="odd kernel_size"):
        CrossConvolutions(2, hidden=4, kernel_size=4)
    with pytest.raises(ValueError, match="at least 2 channels"):
        CrossScaleCoupling(1)
    with pytest.raises(ValueError, match="'first', 'second'|is not a valid"):
        CrossScaleCoupling(4, active="third")
