"""The property checks behind :func:`flowkit.testing.check_flow`."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..core import Context, Flow, State, state_tensors

__all__ = [
    "FlowReport",
    "check_flow",
    "default_logdet_tolerance",
    "default_tolerance",
    "perturb_parameters_",
]

_INVERSE_RTOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.bfloat16: 2e-2,
    torch.float16: 2e-3,
}
# logdet(inverse) == -logdet(forward), computed in the input's dtype, relative to max(1, |logdet|)
_LOGDET_RTOL = {
    torch.float64: 1e-10,
    torch.float32: 1e-5,
    torch.bfloat16: 5e-2,
    torch.float16: 5e-3,
}
# logdet == log|det J|: the Jacobian check always runs on a float64 copy, so a correct layer is
# exact to rounding there (~1e-13); a 1e-8 relative error is a bug, not rounding.
_JACOBIAN_LOGDET_RTOL = 1e-10
# Central differences in float64 with a 1e-6 step are accurate to ~1e-9 on smooth maps; the
# smaller steps are tried only where an interval straddles a kink (see _finite_difference_error).
_GRADIENT_RTOL = 1e-6
_FINITE_DIFFERENCE_STEPS = (1e-6, 1e-7, 1e-8)


def default_tolerance(dtype: torch.dtype) -> float:
    """The relative inverse error allowed for one layer in ``dtype``."""
    return _INVERSE_RTOL.get(dtype, 1e-5)


def default_logdet_tolerance(dtype: torch.dtype) -> float:
    """The relative error allowed between the inverse's logdet and minus the forward's."""
    return _LOGDET_RTOL.get(dtype, 1e-5)


@dataclass
class FlowReport:
    """The worst errors found by :func:`check_flow`, per property (``None``: not checked).

    Attributes:
        inverse_error: max |inverse(forward(x)) - x| / max |x|.
        reforward_error: max |forward(inverse(y)) - y| / max |y| for a random ``y``.
        inverse_logdet_error: max |logdet of the inverse + logdet of the forward|.
        logdet_error: max |logdet - log|det J|| against the autograd Jacobian (float64).
        batch_independence_error: max |d y_i / d x_j| for samples ``i != j`` (eval mode).
        gradient_error: max |autograd - finite differences| of the forward along a random
            direction, relative to ``max(1, |autograd|)`` (float64).
        checked: the properties checked, with the mode.
    """

    inverse_error: float = 0.0
    reforward_error: float | None = None
    inverse_logdet_error: float | None = None
    logdet_error: float | None = None
    batch_independence_error: float | None = None
    gradient_error: float | None = None
    checked: list[str] = field(default_factory=list)


def perturb_parameters_(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Add ``N(0, scale^2)`` noise to every floating parameter, in place.

    A coupling with a zero-initialized subnet is the identity and proves nothing; tests
    perturb the weights so every layer is checked in a non-trivial state.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
                p.add_((scale * noise).to(device=p.device, dtype=p.dtype))
    return module


def _relative_error(actual: State, expected: State) -> tuple[float, str]:
    """max |a - e| / max |e| over all tensors, and where the worst entry is."""
    worst, where = 0.0, ""
    for i, (a, e) in enumerate(zip(state_tensors(actual), state_tensors(expected), strict=False)):
        if a.shape != e.shape:
            raise AssertionError(
                f"shape mismatch in state tensor {i}: {tuple(a.shape)} vs {tuple(e.shape)}"
            )
        diff = (a.double() - e.double()).abs()
        scale = max(float(e.double().abs().max()), 1e-30)
        error = float(diff.max()) / scale
        if error > worst or not where:
            index = tuple(int(j) for j in torch.unravel_index(diff.argmax(), diff.shape))
            worst, where = error, f"index {index} of state tensor {i}"
    return worst, where


def _fail(prop: str, mode: str, error: float, limit: float, where: str) -> None:
    raise AssertionError(
        f"check_flow: property '{prop}' failed in {mode} mode: error {error:.3g} > {limit:.3g}"
        + (f" at {where}" if where else "")
    )


def _flat(state: State) -> Tensor:
    return torch.cat([t.flatten(1) for t in state_tensors(state)], dim=1)


def _unflat(flat: Tensor, like: State) -> State:
    parts, start = [], 0
    for t in state_tensors(like):
        size = t[0].numel()
        parts.append(flat[:, start : start + size].reshape(t.shape))
        start += size
    return parts[0] if isinstance(like, Tensor) else tuple(parts)


def _double(state: State | None) -> State | None:
    if state is None:
        return None
    if isinstance(state, Tensor):
        return state.double() if state.is_floating_point() else state
    return tuple(_double(t) for t in state)


def _finite_difference_error(
    func: Callable[[Tensor], Tensor], flat: Tensor, direction: Tensor, analytic: Tensor
) -> float:
    """max |central difference - autograd| along ``direction``, relative to ``max(1, |J d|)``.

    A piecewise-linear subnet (ReLU, LeakyReLU, max-pool) has kinks: a central difference whose
    interval straddles one is wrong by the slope jump, though autograd is right. Such a
    crossing becomes ten times less likely with each smaller step, while a backward that is
    not the forward's derivative (a detached statistic) is off by the same amount at every
    step; so the smallest error over the steps 1e-6, 1e-7, 1e-8 is taken (float64 rounding
    at 1e-8 is ~1e-8 of the outputs, below the 1e-6 tolerance).
    """
    scale = max(1.0, float(analytic.abs().max()))
    error = float("inf")
    for step in _FINITE_DIFFERENCE_STEPS:
        with torch.no_grad():
            numeric = (func(flat + step * direction) - func(flat - step * direction)) / (2 * step)
        error = min(error, float((numeric - analytic).abs().max()) / scale)
        if error <= _GRADIENT_RTOL:
            break
    return error


def _jacobian_checks(
    flow: Flow, x: State, context: Context, max_entries: int, train: bool
) -> tuple[float, float | None, float]:
    """Logdet error, cross-sample dependence (eval) and the autograd-vs-finite-difference
    gradient error, on a float64 copy.

    Eval mode: each sample's logdet against ``log|det|`` of its diagonal block of the batch
    Jacobian, and the off-diagonal blocks must vanish. Training mode may couple the samples
    (a batch mean, as in volume normalization), so the check is on the whole batch: the sum of
    the logdets against ``log|det|`` of the full ``(batch * dim)``-square Jacobian.
    """
    flow64 = copy.deepcopy(flow).double().train(train)
    for module in flow64.modules():  # one backward per Jacobian row: replays would cost O(depth)
        if getattr(module, "memory_saving", False):
            module.memory_saving = False
    x64 = _flat(x).double()
    context64 = _double(context)
    kwargs = {} if context is None else {"context": context64}
    batch, dim = x64.shape
    if (batch * dim) ** 2 > max_entries:
        raise ValueError(
            f"the Jacobian of a batch of {batch} x {dim} numbers is too large to build; "
            "use a smaller input for the logdet check (a few hundred numbers per sample)"
        )

    def func(flat: Tensor) -> Tensor:
        y, _ = flow64(_unflat(flat.view(batch, dim), x), **kwargs)
        out = _flat(y)
        if out.shape != (batch, dim):
            raise AssertionError(
                f"forward maps {dim} numbers per sample to {out.shape[1]}: not a bijection; "
                "derive from flowkit.InjectiveFlow"
            )
        return out.reshape(-1)

    with torch.no_grad():
        _, logdet = flow64(_unflat(x64, x), **kwargs)
    flat = x64.reshape(-1)
    jac = torch.autograd.functional.jacobian(func, flat)
    # Backward must be the derivative of forward (a detached statistic breaks it silently):
    # autograd against central differences along one random direction.
    direction = torch.randn(flat.shape, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(0))
    analytic = jac @ direction
    gradient_error = _finite_difference_error(func, flat, direction, analytic)
    if train:
        brute = torch.linalg.slogdet(jac)[1]
        return float((brute - logdet.sum()).abs()), None, gradient_error
    jac = jac.view(batch, dim, batch, dim)
    logdet_error, cross = 0.0, 0.0
    for b in range(batch):
        brute = torch.linalg.slogdet(jac[b, :, b, :])[1]
        logdet_error = max(logdet_error, float((brute - logdet[b]).abs()))
        others = torch.cat([jac[b, :, :b], jac[b, :, b + 1 :]], dim=1)
        if others.numel():
            cross = max(cross, float(others.abs().max()))
    return logdet_error, cross, gradient_error


def check_flow(
    flow: Flow,
    x: State,
    *,
    context: Context = None,
    modes: tuple[str, ...] = ("train", "eval"),
    rtol: float | None = None,
    logdet_rtol: float | None = None,
    check_logdet: bool = True,
    max_jacobian_entries: int = 4_000_000,
) -> FlowReport:
    """Check that ``flow`` inverts exactly and has the right log-determinant at ``x``.

    Runs on a deep copy cast to ``x``'s dtype (the original is untouched), in each mode in
    order (train first, so data-dependent inits happen before the eval checks):

    - ``inverse(forward(x)) == x`` to relative error ``rtol`` (every flow, injective too);
    - ``forward(inverse(y)) == y`` for a random ``y`` (bijective flows);
    - the inverse's logdet is minus the forward's, to ``logdet_rtol`` (bijective flows);
    - with ``check_logdet``, on a float64 copy: ``logdet`` equals ``log|det J|`` of the
      autograd Jacobian to 1e-10 relative (to ``max(1, |logdet|)``); in eval mode per sample,
      with sample ``i`` of the output independent of sample ``j`` of the input; in training
      mode, where a batch statistic may couple the samples, for the whole batch; and
      autograd's derivative equals central finite differences (1e-6 relative), which
      catches a backward that is not the forward's derivative (a detached statistic).

    Args:
        flow: the flow to check.
        x: an input state; keep it small for the Jacobian (e.g. 2 x 4 x 4 x 4).
        context: the conditioning input of a conditional flow (held fixed).
        modes: the modes to check, among ``"train"`` and ``"eval"``.
        rtol: the relative inverse tolerance (default: :func:`default_tolerance` of the dtype).
        logdet_rtol: the relative tolerance of the inverse's logdet (default:
            :func:`default_logdet_tolerance` of the dtype).
        check_logdet: whether to run the Jacobian checks.
        max_jacobian_entries: refuse inputs whose batch Jacobian has more entries.

    Returns:
        A :class:`FlowReport` of the worst errors.

    Raises:
        AssertionError: naming the failing property, the mode, the worst error and where.

    Example:
        >>> import torch, flowkit
        >>> from flowkit.testing import check_flow
        >>> report = check_flow(flowkit.layers.InvConv1x1(3), torch.randn(2, 3, 2, 2).double())
        >>> report.logdet_error < 1e-10
        True
    """
    first = state_tensors(x)[0]
    flow = copy.deepcopy(flow).to(device=first.device)
    if first.is_floating_point():
        flow = flow.to(first.dtype)
    rtol = default_tolerance(first.dtype) if rtol is None else rtol
    logdet_rtol = default_logdet_tolerance(first.dtype) if logdet_rtol is None else logdet_rtol
    kwargs = {} if context is None else {"context": context}
    report = FlowReport()
    for mode in modes:
        if mode not in ("train", "eval"):
            raise ValueError(f"modes must be 'train' or 'eval', got {mode!r}")
        flow.train(mode == "train")
        with torch.no_grad():
            y, logdet = flow(x, **kwargs)
            if tuple(logdet.shape) != (first.shape[0],):
                raise AssertionError(
                    f"check_flow: logdet has shape {tuple(logdet.shape)}, expected "
                    f"({first.shape[0]},): one value per sample"
                )
            error, where = _relative_error(flow.inverse(y, **kwargs), x)
            report.inverse_error = max(report.inverse_error, error)
            report.checked.append(f"inverse(forward(x)) == x [{mode}]")
            if error > rtol:
                _fail("inverse(forward(x)) == x", mode, error, rtol, where)
            if not flow.bijective:
                continue
            y_random = tuple(
                torch.randn_like(t) * t.std(correction=0).clamp_min(0.1) + t.mean()
                for t in state_tensors(y)
            )
            y_random = y_random[0] if isinstance(y, Tensor) else y_random
            x_back, inverse_logdet = flow.inverse_and_logdet(y_random, **kwargs)
            error, where = _relative_error(flow(x_back, **kwargs)[0], y_random)
            report.reforward_error = max(report.reforward_error or 0.0, error)
            report.checked.append(f"forward(inverse(y)) == y [{mode}]")
            if error > 100 * rtol:
                _fail("forward(inverse(y)) == y", mode, error, 100 * rtol, where)
            _, logdet_back = flow(x_back, **kwargs)
            error = float((inverse_logdet + logdet_back).abs().max())
            limit = logdet_rtol * max(1.0, float(logdet_back.abs().max()))
            report.inverse_logdet_error = max(report.inverse_logdet_error or 0.0, error)
            report.checked.append(f"logdet(inverse) == -logdet(forward) [{mode}]")
            if error > limit:
                _fail("logdet(inverse) == -logdet(forward)", mode, error, limit, "")
        if check_logdet and flow.bijective:
            _check_jacobian(flow, x, context, max_jacobian_entries, mode, logdet, report)
    return report


def _check_jacobian(
    flow: Flow, x: State, context: Context, max_entries: int, mode: str, logdet: Tensor,
    report: FlowReport,
) -> None:
    train = mode == "train"
    logdet_error, cross, gradient_error = _jacobian_checks(flow, x, context, max_entries, train)
    report.logdet_error = max(report.logdet_error or 0.0, logdet_error)
    report.gradient_error = max(report.gradient_error or 0.0, gradient_error)
    report.checked += [f"logdet == log|det J| [{mode}]", f"autograd == finite differences [{mode}]"]
    if cross is not None:
        report.batch_independence_error = cross
        report.checked.append(f"samples independent [{mode}]")
        if cross > 1e-8:
            _fail("sample i independent of sample j", mode, cross, 1e-8, "")
    scale = float(logdet.sum().abs()) if train else float(logdet.abs().max())
    limit = _JACOBIAN_LOGDET_RTOL * max(1.0, scale)
    if logdet_error > limit:
        _fail("logdet == log|det J|", mode, logdet_error, limit, "")
    if gradient_error > _GRADIENT_RTOL:
        _fail("autograd == finite differences", mode, gradient_error, _GRADIENT_RTOL, "")
