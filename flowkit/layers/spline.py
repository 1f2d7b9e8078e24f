"""Monotonic rational-quadratic splines (neural spline flows): elementwise and as a coupling.

On ``[-bound, bound]`` each element goes through a monotonic piecewise rational-quadratic
function of ``K`` bins whose knots and knot derivatives are parameters; outside, the map is the
identity (the *linear tails*, slope 1, so the spline and its derivative are continuous at the
boundary). With all parameters zero the spline is the identity, so a coupling whose subnet
starts at zero starts as the identity flow.

Per element there are ``3K - 1`` unconstrained parameters: ``K`` bin widths, ``K`` bin heights
(both through a softmax, mixed with a minimum size) and ``K - 1`` interior knot derivatives
(through a softplus scaled so that 0 maps to slope 1, plus a minimum). In bin ``k`` with
``xi = (x - x_k) / w_k``, slope ``s_k = h_k / w_k`` and knot derivatives ``d_k, d_{k+1}``:

.. math::

    y = y_k + h_k \\frac{s_k \\xi^2 + d_k \\xi (1 - \\xi)}
                      {s_k + (d_{k+1} + d_k - 2 s_k) \\xi (1 - \\xi)}.

The inverse solves the quadratic for ``xi`` in the cancellation-free form
``xi = 2c / (-b - sqrt(b^2 - 4ac))``.

References:
    Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", arXiv:1906.04032.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import Flow, State
from ..validation import check_channels
from .coupling import SubnetConstructor, _Coupling

__all__ = [
    "RQSpline",
    "RQSplineCoupling",
    "SplineConfig",
    "rq_spline",
    "rq_spline_inverse",
]

_LOG_2 = math.log(2.0)


@dataclass(frozen=True)
class SplineConfig:
    """The shape of a rational-quadratic spline.

    Attributes:
        bins: number of bins ``K`` on ``[-bound, bound]``.
        bound: the half-width of the interval the spline acts on; identity outside.
        min_bin_width: the smallest bin width, as a fraction of the interval.
        min_bin_height: the smallest bin height, as a fraction of the interval.
        min_derivative: the smallest knot derivative.
    """

    bins: int = 8
    bound: float = 3.0
    min_bin_width: float = 1e-3
    min_bin_height: float = 1e-3
    min_derivative: float = 1e-3

    def __post_init__(self) -> None:
        if int(self.bins) != self.bins or self.bins < 1:
            raise ValueError(f"a spline needs bins >= 1 (an integer), got {self.bins!r}")
        if not self.bound > 0:
            raise ValueError(f"a spline needs bound > 0, got {self.bound!r}")
        for name in ("min_bin_width", "min_bin_height"):
            value = getattr(self, name)
            if not 0 <= value * self.bins < 1:
                raise ValueError(
                    f"{name}={value!r} times bins={self.bins} must lie in [0, 1): the bins "
                    f"must fit in the interval; use {name} < {1 / self.bins:.3g}"
                )
        if not 0 <= self.min_derivative < 1:
            raise ValueError(
                f"min_derivative must lie in [0, 1) (slope 1 is the identity), "
                f"got {self.min_derivative!r}"
            )

    @property
    def params(self) -> int:
        """Unconstrained parameters per element: ``3 * bins - 1``."""
        return 3 * self.bins - 1


def _knots(raw: Tensor, bound: float, minimum: float) -> Tensor:
    """Knot positions ``[..., K+1]`` from ``-bound`` to ``bound`` for raw bin sizes ``[..., K]``."""
    bins = raw.shape[-1]
    sizes = minimum + (1 - minimum * bins) * torch.softmax(raw, dim=-1)
    knots = F.pad(torch.cumsum(sizes, dim=-1), (1, 0))
    knots = 2 * bound * knots - bound
    # Pin the ends exactly: the cumulative sum is 1 only up to rounding.
    return torch.cat([knots.new_full((*knots.shape[:-1], 1), -bound), knots[..., 1:-1],
                      knots.new_full((*knots.shape[:-1], 1), bound)], dim=-1)


def _derivatives(raw: Tensor, minimum: float) -> Tensor:
    """Knot derivatives ``[..., K+1]``: 1 at both ends (the linear tails), positive inside."""
    inner = minimum + (1 - minimum) * F.softplus(raw) / _LOG_2
    ones = raw.new_ones((*raw.shape[:-1], 1))
    return torch.cat([ones, inner, ones], dim=-1)


def _unpack(params: Tensor, config: SplineConfig) -> tuple[Tensor, Tensor, Tensor]:
    """Split ``[..., 3K-1]`` into x-knots, y-knots and derivatives, each ``[..., K+1]``."""
    if params.shape[-1] != config.params:
        raise ValueError(
            f"a {config.bins}-bin spline takes {config.params} parameters per element in the "
            f"last dimension, got {params.shape[-1]} (shape {tuple(params.shape)})"
        )
    bins = config.bins
    xs = _knots(params[..., :bins], config.bound, config.min_bin_width)
    ys = _knots(params[..., bins : 2 * bins], config.bound, config.min_bin_height)
    ds = _derivatives(params[..., 2 * bins :], config.min_derivative)
    return xs, ys, ds


def _gather_bin(knots: Tensor, values: Tensor) -> Tensor:
    """The index of the bin of each value: ``knots[..., k] <= value`` for the largest inner k."""
    return (values.unsqueeze(-1) >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)


def _bin(xs: Tensor, ys: Tensor, ds: Tensor, index: Tensor) -> tuple[Tensor, ...]:
    """``x_k, w_k, y_k, h_k, d_k, d_{k+1}`` of the selected bins (each shaped like the data)."""

    def take(t: Tensor, shift: int = 0) -> Tensor:
        return t.gather(-1, index + shift).squeeze(-1)

    x_k, y_k = take(xs), take(ys)
    return x_k, take(xs, 1) - x_k, y_k, take(ys, 1) - y_k, take(ds), take(ds, 1)


def rq_spline(x: Tensor, params: Tensor, config: SplineConfig) -> tuple[Tensor, Tensor]:
    """The spline applied elementwise, and ``log dy/dx`` per element.

    Args:
        x: inputs of any shape ``S``.
        params: unconstrained parameters, shape ``S + (3 * bins - 1,)``.
        config: the spline's shape.

    Returns:
        ``(y, log_derivative)``, both of shape ``S``; identity (log-derivative 0) outside
        ``[-bound, bound]``.

    Example:
        >>> import torch
        >>> x = torch.linspace(-4, 4, 9)
        >>> y, logd = rq_spline(x, torch.zeros(9, 23), SplineConfig(bins=8))
        >>> torch.allclose(y, x), bool(logd.abs().max() < 1e-6)
        (True, True)
    """
    bound = config.bound
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)  # the unused branch of the where must stay finite
    xs, ys, ds = _unpack(params, config)
    x_k, w_k, y_k, h_k, d_k, d_k1 = _bin(xs, ys, ds, _gather_bin(xs, xc))
    s_k = h_k / w_k
    xi = ((xc - x_k) / w_k).clamp(0, 1)
    xi_1mxi = xi * (1 - xi)
    denominator = s_k + (d_k1 + d_k - 2 * s_k) * xi_1mxi
    y = y_k + h_k * (s_k * xi.square() + d_k * xi_1mxi) / denominator
    numerator = d_k1 * xi.square() + 2 * s_k * xi_1mxi + d_k * (1 - xi).square()
    log_derivative = 2 * torch.log(s_k) + torch.log(numerator) - 2 * torch.log(denominator)
    return torch.where(inside, y, x), torch.where(inside, log_derivative, 0.0)


def rq_spline_inverse(y: Tensor, params: Tensor, config: SplineConfig) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`rq_spline`, and ``log dx/dy`` per element.

    Args:
        y: outputs of any shape ``S``.
        params: the parameters that produced ``y``, shape ``S + (3 * bins - 1,)``.
        config: the spline's shape.

    Returns:
        ``(x, log_derivative)`` of shape ``S``, ``log_derivative = -log dy/dx`` at ``x``.
    """
    bound = config.bound
    inside = (y >= -bound) & (y <= bound)
    yc = y.clamp(-bound, bound)
    xs, ys, ds = _unpack(params, config)
    x_k, w_k, y_k, h_k, d_k, d_k1 = _bin(xs, ys, ds, _gather_bin(ys, yc))
    s_k = h_k / w_k
    dy = yc - y_k
    curvature = d_k1 + d_k - 2 * s_k
    a = h_k * (s_k - d_k) + dy * curvature
    b = h_k * d_k - dy * curvature
    c = -s_k * dy
    root = torch.sqrt((b.square() - 4 * a * c).clamp_min(0))
    # The root in [0, 1] as 2c / (-b - root): that denominator equals 2c / xi = -2 s_k dy / xi,
    # away from 0 on the whole bin; the textbook (-b + root) / 2a is 0/0 where the bin is
    # linear (a = 0: the identity, which is where every spline starts).
    xi = (2 * c / (-b - root)).clamp(0, 1)
    x = x_k + xi * w_k
    xi_1mxi = xi * (1 - xi)
    denominator = s_k + curvature * xi_1mxi
    numerator = d_k1 * xi.square() + 2 * s_k * xi_1mxi + d_k * (1 - xi).square()
    log_derivative = 2 * torch.log(denominator) - 2 * torch.log(s_k) - torch.log(numerator)
    return torch.where(inside, x, y), torch.where(inside, log_derivative, 0.0)


class RQSpline(Flow):
    """An elementwise rational-quadratic spline with learnable parameters per channel.

    Every element of channel ``c`` of ``x`` (``[batch, channels, *spatial]``, or
    ``[batch, features]`` for vectors) goes through the same spline; the parameters, shape
    ``[channels, 3 * bins - 1]``, start at zero (the identity). ``logdet`` sums the
    log-derivatives over all non-batch dimensions.

    Args:
        channels: size of dim 1 of the input.
        bins: number of bins on ``[-bound, bound]``.
        bound: the interval the spline acts on; identity outside (linear tails).
        min_bin_width: the smallest bin width, as a fraction of the interval.
        min_bin_height: the smallest bin height, as a fraction of the interval.
        min_derivative: the smallest knot derivative.

    Example:
        >>> import torch
        >>> spline = RQSpline(3, bins=4)
        >>> y, logdet = spline(torch.randn(2, 3, 5, 5))
        >>> y.shape, logdet.shape
        (torch.Size([2, 3, 5, 5]), torch.Size([2]))

    References:
        Durkan et al., "Neural Spline Flows", arXiv:1906.04032.
    """

    def __init__(
        self,
        channels: int,
        bins: int = 8,
        bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
    ) -> None:
        super().__init__()
        self.config = SplineConfig(bins, bound, min_bin_width, min_bin_height, min_derivative)
        self.channels = channels
        self.params = nn.Parameter(torch.zeros(channels, self.config.params))

    def _expanded(self, x: Tensor) -> Tensor:
        shape = (1, self.channels) + (1,) * (x.dim() - 2) + (self.config.params,)
        return self.params.to(x.dtype).view(shape).expand(*x.shape, self.config.params)

    def forward(self, x: State) -> tuple[Tensor, Tensor]:
        """``y = spline_c(x)`` per channel ``c``; ``logdet`` = sum of log-derivatives."""
        x = check_channels(self, x, self.channels)
        y, log_derivative = rq_spline(x, self._expanded(x), self.config)
        return y, log_derivative.flatten(1).sum(1)

    def inverse_and_logdet(self, y: State) -> tuple[Tensor, Tensor]:
        """The spline's inverse per channel, and its log-determinant."""
        y = check_channels(self, y, self.channels)
        x, log_derivative = rq_spline_inverse(y, self._expanded(y), self.config)
        return x, log_derivative.flatten(1).sum(1)


class RQSplineCoupling(_Coupling):
    """Neural spline coupling: ``y2 = spline(x2; subnet(x1))``, one spline per element.

    The subnet maps the passive half ``[B, ceil(C/2), *spatial]`` to
    ``[B, (3 * bins - 1) * floor(C/2), *spatial]``: parameter-major, i.e. the ``bins`` raw
    widths of every active channel first, then the heights, then the ``bins - 1`` interior
    derivatives (as :class:`~flowkit.layers.AffineCoupling` puts all scales before all shifts).
    Works on images (with :class:`~flowkit.layers.ConvSubnet`) and on vectors ``[B, C]`` (with
    :class:`~flowkit.layers.MLPSubnet`). Outside ``[-bound, bound]`` the map is the identity;
    a zero subnet output is the identity everywhere.

    The memory-saving engine rebuilds it with one subnet evaluation (the coupling's fused
    rebuild): the subnet output on the passive half drives both the inverse and the replay.

    Conditioning: the inverse errs by about ``eps * |y| / (dy/dx)``, and inside a bin the slope
    can fall far below ``min_derivative`` when the raw parameters are large (|raw| ~ 5 allows
    slopes near 1e-6 with the defaults, which are nflows'). Raise the three minimums (e.g.
    0.1, 0.1, 0.2) to bound the slopes where float32 inverses must be exact to ~1e-5.

    Args:
        channels: channels (or features) of the input, at least 2.
        subnet: constructor ``subnet(in_channels, out_channels) -> nn.Module``.
        bins: number of bins on ``[-bound, bound]``.
        bound: the interval the spline acts on; identity outside (linear tails).
        min_bin_width: the smallest bin width, as a fraction of the interval.
        min_bin_height: the smallest bin height, as a fraction of the interval.
        min_derivative: the smallest knot derivative.
        context_channels: channels of the conditioning input (0: unconditional); the subnet
            then sees ``concat(x1, context)``, as in :class:`~flowkit.layers.AffineCoupling`.

    Example:
        >>> import torch
        >>> from flowkit.layers import MLPSubnet
        >>> layer = RQSplineCoupling(2, lambda i, o: MLPSubnet(i, o, hidden=16), bins=4)
        >>> y, logdet = layer(torch.randn(10, 2))
        >>> y.shape, logdet.shape
        (torch.Size([10, 2]), torch.Size([10]))

    References:
        Durkan, Bekasov, Murray & Papamakarios, "Neural Spline Flows", arXiv:1906.04032.
    """

    def __init__(
        self,
        channels: int,
        subnet: SubnetConstructor,
        bins: int = 8,
        bound: float = 3.0,
        min_bin_width: float = 1e-3,
        min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3,
        context_channels: int = 0,
    ) -> None:
        config = SplineConfig(bins, bound, min_bin_width, min_bin_height, min_derivative)
        self.params_per_channel = config.params
        super().__init__(channels, subnet, context_channels)
        self.config = config

    def _spline_params(self, h: Tensor) -> Tensor:
        """``[B, P * active, *spatial]`` -> ``[B, active, *spatial, P]``."""
        h = h.unflatten(1, (self.config.params, self.active))
        return h.movedim(1, -1)

    def _transform(self, x2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        y2, log_derivative = rq_spline(x2, self._spline_params(h), self.config)
        return y2, log_derivative.flatten(1).sum(1)

    def _untransform(self, y2: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        x2, log_derivative = rq_spline_inverse(y2, self._spline_params(h), self.config)
        return x2, log_derivative.flatten(1).sum(1)
