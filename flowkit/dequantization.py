"""Uniform dequantization of discrete images and the bits-per-dimension of a density on them.

Convention (Theis, van den Oord & Bethge, "A note on the evaluation of generative models",
arXiv:1511.01844; used by RealNVP and Glow): integer pixels ``k in {0, ..., levels-1}`` become
``x = (k + u) / levels`` with ``u ~ U[0, 1)``, so ``x in [0, 1)^D``. A continuous density
``p`` on ``[0, 1)^D`` then bounds the discrete model's likelihood,
``-log P(k) <= E_u[-log p((k + u) / levels)] + D log(levels)``, and

    bits/dim = (nll + D * log(levels)) / (D * log 2),

with ``nll`` the negative log-density in nats of the *scaled* data in ``[0, 1)^D``. For 8-bit
images ``levels = 256``. A flow that first maps ``[0, 1)`` elsewhere (a shift, a logit) must
include that map's log-determinant in ``nll``, as a flowkit layer in the flow does.

Variational dequantization (Ho et al., "Flow++", arXiv:1902.00275) draws ``u`` from a learned
``q(u | k)`` instead; the bound becomes
``-log P(k) <= E_q[-log p(x) + log q(u | k)] + D log(levels)``, so the same formula holds with
``nll = -log p(x) + log q(u | k)`` (:class:`VariationalDequantization` returns ``log q``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .core import Flow, context_kwargs

__all__ = ["VariationalDequantization", "bits_per_dim", "uniform_dequantize"]

_LOG_2PI = math.log(2 * math.pi)


def _check_levels(levels: int) -> int:
    if isinstance(levels, bool) or int(levels) != levels or levels < 2:
        raise ValueError(f"levels must be an integer >= 2 (256 for 8-bit images), got {levels!r}")
    return int(levels)


def _check_pixels(k: Tensor, levels: int) -> Tensor:
    """``k`` as float32 (float64 stays), after checking it holds integers in ``[0, levels)``."""
    dtype = k.dtype if k.dtype == torch.float64 else torch.float32
    values = k.to(dtype)
    # A deliberate check of the data (one host sync per batch, outside any layer's forward):
    # images already scaled to [0, 1] are the common mistake, and would pass silently.
    invalid = (values != values.round()) | (values < 0) | (values >= levels)
    if bool(invalid.any()):
        raise ValueError(
            f"dequantization takes integer pixel values in [0, {levels}), got values in "
            f"[{float(values.min())}, {float(values.max())}]; pass the raw integer image, not "
            "one already scaled to [0, 1]"
        )
    return values


def uniform_dequantize(
    k: Tensor, levels: int = 256, generator: torch.Generator | None = None
) -> Tensor:
    """``(k + u) / levels`` with ``u ~ U[0, 1)``, for integer-valued ``k`` in ``[0, levels)``.

    Args:
        k: pixel values ``0 .. levels-1`` (an integer tensor, or a float tensor holding
            integers), any shape.
        levels: the number of discrete values per pixel (256 for 8-bit images).
        generator: the random generator for ``u``.

    Returns:
        A float32 (float64 for float64 input) tensor of ``k``'s shape in ``[0, 1)``.

    Raises:
        ValueError: if ``k`` holds non-integers or values outside ``[0, levels)`` (a host
            check of the data, not of a layer's hot path).

    Example:
        >>> x = uniform_dequantize(torch.tensor([0, 255]), 256)
        >>> bool((x >= 0).all() and (x < 1).all())
        True
    """
    values = _check_pixels(k, _check_levels(levels))
    noise = torch.rand(k.shape, generator=generator, dtype=values.dtype, device=k.device)
    return (values + noise) / levels


def bits_per_dim(nll: Tensor | float, dims: int, levels: int = 256) -> Tensor:
    """``(nll + D log(levels)) / (D log 2)``: nats of data in ``[0, 1)^D`` to bits per dim.

    Args:
        nll: negative log-density in nats per sample of the dequantized data scaled to
            ``[0, 1)^D`` (see the module doc); a tensor of any shape or a float.
        dims: ``D``, the number of dimensions per sample (e.g. ``C * H * W``).
        levels: the discrete values per dimension (256 for 8-bit images).

    Returns:
        Bits per dimension, shaped like ``nll``.

    Example:
        >>> float(bits_per_dim(0.0, dims=64, levels=256))  # uniform density on [0, 1)^64
        8.0
    """
    levels = _check_levels(levels)
    if dims < 1:
        raise ValueError(f"dims must be the positive number of dimensions per sample, got {dims}")
    nll = torch.as_tensor(nll)
    return (nll + dims * math.log(levels)) / (dims * math.log(2))


class VariationalDequantization(nn.Module):
    """Learned dequantization noise: ``u = sigmoid(f(eps; k))``, ``eps ~ N(0, 1)``.

    ``f`` is a flow on the pixels' shape, usually conditional on the integer image (its
    couplings built with ``context_channels = C``): it receives ``context = 2 k / (levels - 1)
    - 1`` in ``[-1, 1]``. ``forward(k)`` returns ``x = (k + u) / levels`` in ``(0, 1)`` and
    ``log q(u | k)`` per sample; train the density and ``f`` together on
    ``-log p(x) + log q`` (see the module doc for the bound and :func:`bits_per_dim`).

    Args:
        flow: a :class:`~flowkit.Flow` on tensors shaped like ``k`` (a single Tensor).
        levels: the discrete values per pixel (256 for 8-bit images).

    Example:
        >>> import torch, flowkit
        >>> from flowkit.layers import AffineCoupling, ConvSubnet
        >>> noise_flow = AffineCoupling(2, lambda i, o: ConvSubnet(i, o, 8), context_channels=2)
        >>> dequantize = VariationalDequantization(noise_flow, levels=256)
        >>> x, log_q = dequantize(torch.randint(256, (4, 2, 5, 5)))
        >>> x.shape, log_q.shape
        (torch.Size([4, 2, 5, 5]), torch.Size([4]))

    References:
        Ho, Chen, Srinivas, Duan & Abbeel, "Flow++: Improving Flow-Based Generative Models
        with Variational Dequantization and Architecture Design", arXiv:1902.00275.
    """

    def __init__(self, flow: Flow, levels: int = 256) -> None:
        super().__init__()
        if not isinstance(flow, Flow):
            raise TypeError(
                f"VariationalDequantization needs a flowkit.Flow, got {type(flow).__name__}"
            )
        self.flow = flow
        self.levels = _check_levels(levels)

    def forward(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """``(x, log q(u | k))`` for integer pixels ``k``; ``x`` has ``k``'s shape."""
        values = _check_pixels(k, self.levels)
        context = 2 * values / (self.levels - 1) - 1
        eps = torch.randn_like(values)
        v, logdet = self.flow(eps, **context_kwargs(self.flow, context))
        log_q = (-0.5 * (eps.square() + _LOG_2PI)).flatten(1).sum(1) - logdet
        # u = sigmoid(v): log|du/dv| = log sigmoid(v) + log sigmoid(-v).
        log_q = log_q - (F.logsigmoid(v) + F.logsigmoid(-v)).flatten(1).sum(1)
        return (values + torch.sigmoid(v)) / self.levels, log_q
