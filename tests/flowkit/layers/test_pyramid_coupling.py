"""PyramidCoupling against an independent transcription of the official block's math.

The reference below restates, in plain tensor operations, what the official PyramidFlow code
(gasharper/PyramidFlow, ``model.py``: ``FlowBlock``, ``FlowBlock2``, ``AffineParamBlock``,
``VolumeNorm``, ``InvConv2dLU``) computes: the subnet at the condition's resolution, the soft
clamp, volume normalization over the *full-resolution* map (the running mean then keeps that
map's shape, ``(1-m) * running + m * mean`` per update), the nearest subsampling of a 'down'
block's ``s`` and ``t`` after normalization, ``exp(s) * x + t``, then the LU 1x1 conv with
mean-subtracted log-scales. Written for this test, not copied.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor

from flowkit.layers import PyramidCoupling
from flowkit.testing import perturb_parameters_
from flowkit.testing import strategies as fst

TOL = {"rtol": 1e-12, "atol": 1e-12}


class OfficialBlockMath:
    """The official block's forward on a tuple of levels, with its own running-mean state."""

    def __init__(self, block: PyramidCoupling, clamp_scale: float, updates: int) -> None:
        self.block, self.clamp_scale, self.updates = block, clamp_scale, updates
        self.dims = (0, 1) if block.norm.mode.value == "channel" else (0, 2, 3)
        self.running = torch.zeros(1, 1, 1, 1, dtype=torch.float64)

    def weight(self) -> Tensor:
        mix = self.block.mix
        n = mix.channels
        log_s = mix.log_s - mix.log_s.mean()
        lower = mix.lower * torch.ones(n, n).tril(-1) + torch.eye(n)
        upper = mix.upper * torch.ones(n, n).triu(1) + torch.diag(mix.sign * log_s.exp())
        return (mix.permutation @ lower @ upper)[..., None, None]

    def params(self, condition: Tensor, training: bool) -> tuple[Tensor, Tensor]:
        sub = self.block.subnet
        pad = sub.conv1.kernel_size[0] // 2
        hidden = F.leaky_relu(F.conv2d(condition, sub.conv1.weight, padding=pad), 0.01)
        raw, t = F.conv2d(hidden, sub.conv2.weight, padding=pad).chunk(2, 1)  # stride 1 always
        clamp = self.block.clamp
        s = clamp * self.clamp_scale * torch.atan(raw / clamp)
        if not training:
            return s - self.running, t
        mean = s.mean(self.dims, keepdim=True)
        for _ in range(self.updates):
            self.running = (1 - 0.1) * self.running + 0.1 * mean
        return s - mean, t

    def forward(self, levels: tuple[Tensor, ...], training: bool) -> tuple[Tensor, Tensor]:
        """The new target level and the per-sample sum of its log-scales."""
        kind, i = self.block.kind.value, self.block.level
        if kind == "up":
            target = levels[i]
            cond = F.interpolate(levels[i + 1], size=target.shape[2:], mode="nearest")
            s, t = self.params(cond, training)
        elif kind == "down":
            target = levels[i + 1]
            s, t = self.params(levels[i], training)
            s, t = (F.interpolate(m, size=target.shape[2:], mode="nearest") for m in (s, t))
        else:
            target = levels[i + 1]
            cond = torch.cat([
                F.interpolate(levels[i], size=target.shape[2:], mode="nearest"),
                F.interpolate(levels[i + 2], size=target.shape[2:], mode="nearest"),
            ], 1)
            s, t = self.params(cond, training)
        return F.conv2d(s.exp() * target + t, self.weight()), s.flatten(1).sum(1)


def _running_as_ours(reference: OfficialBlockMath, block: PyramidCoupling) -> Tensor:
    """The reference's running mean at our buffer's shape (CVN 'down': the subsampled map)."""
    ours = block.norm.running_mean
    if reference.running.shape == ours.shape:
        return reference.running
    return F.interpolate(reference.running, size=ours.shape[-2:], mode="nearest")


@settings(max_examples=12)
@given(
    kind=st.sampled_from(["up", "down", "dual"]),
    norm=st.sampled_from(["channel", "spatial"]),
    level=st.integers(0, 1),
    batch=st.integers(2, 3),
    channels=st.integers(1, 3),
    size=st.sampled_from([(8, 8), (16, 8), (8, 16)]),
    updates=st.sampled_from([1, 3]),
    rounded_scale=st.booleans(),
    seed=fst.seeds(),
)
def test_block_matches_the_official_math_in_train_and_eval(
    kind, norm, level, batch, channels, size, updates, rounded_scale, seed
) -> None:
    levels_n = level + 4
    gen = torch.Generator().manual_seed(seed)
    sizes = [(size[0] >> k, size[1] >> k) for k in range(levels_n)]
    target = level if kind == "up" else level + 1
    # A scale other than 2/pi, as parity runs pass one (computed, not a copied literal).
    clamp_scale = round(2 / math.pi, 3) if rounded_scale else 2 / math.pi
    torch.manual_seed(seed)
    block = PyramidCoupling(
        kind, level, levels_n, channels, kernel_size=3, volume_norm=norm,
        target_size=sizes[target], clamp_scale=clamp_scale, norm_updates=updates,
    ).double()
    perturb_parameters_(block, scale=0.3, seed=seed)
    reference = OfficialBlockMath(block, clamp_scale, updates)

    def state() -> tuple[Tensor, ...]:
        return tuple(torch.randn(batch, channels, *hw, generator=gen, dtype=torch.float64)
                     for hw in sizes)

    block.train()
    for _ in range(3):  # several steps: the running means move
        x = state()
        (y, logdet), (ref_y, ref_sum) = block(x), reference.forward(x, training=True)
        torch.testing.assert_close(y[target], ref_y, **TOL)
        torch.testing.assert_close(logdet, ref_sum, **TOL)  # |det W| = 1
        for k in set(range(levels_n)) - {target}:
            assert torch.equal(y[k], x[k])
        torch.testing.assert_close(block.norm.running_mean, _running_as_ours(reference, block),
                                   **TOL)
    block.eval()
    x = state()
    (y, logdet), (ref_y, ref_sum) = block(x), reference.forward(x, training=False)
    torch.testing.assert_close(y[target], ref_y, **TOL)
    torch.testing.assert_close(logdet, ref_sum, **TOL)


def test_spatial_down_block_normalizes_at_full_resolution() -> None:
    """The SVN mean over the subsampled grid differs: the full-resolution one is the official."""
    block = PyramidCoupling("down", 0, 2, 2, kernel_size=3, volume_norm="spatial").double()
    perturb_parameters_(block, scale=0.5)
    assert block.subnet.conv2.stride == (1, 1)
    x = (torch.randn(2, 2, 16, 16, dtype=torch.float64), torch.randn(2, 2, 8, 8,
                                                                    dtype=torch.float64))
    _, logdet = block(x)
    # The subsampled log-scales are not zero-mean per channel, so the logdet is not zero.
    assert float(logdet.detach().abs().max()) > 1e-3
    channel = PyramidCoupling("down", 0, 2, 2, kernel_size=3, volume_norm="channel")
    assert channel.subnet.conv2.stride == (2, 2)  # CVN keeps the 4x cheaper exact path


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"clamp_scale": 0.0}, "clamp_scale"), ({"clamp_scale": 1.5}, "clamp_scale"),
     ({"norm_updates": 0}, "updates_per_step"), ({"norm_updates": 2.0}, "updates_per_step")],
)
def test_parity_options_are_validated(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        PyramidCoupling("up", 0, 2, 2, kernel_size=3, **kwargs)
