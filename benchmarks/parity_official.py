"""Our PyramidFlow against the official code over a training run: same weights, same batches.

The official code (gasharper/PyramidFlow's ``model.py`` and ``util.py``, gasharper/autoFlow's
``autoFlow.py``) is imported from the folders the user gives; nothing of it is copied here or
into flowkit. Both models are built at the official ``train.py`` settings with ``--encoder
none``: 256 px, ``C = 16``, ``L = 4``, 4 stacks, 7x7 subnets, CVN, batch 2, memory saving on
both sides (``train.py``'s ``--saveMemory`` default), Adam(lr 2e-4, betas (0.5, 0.9), eps 1e-4,
weight decay 1e-5), gradient-norm clip 1, seed 0. Our weights are copied into the official
model, then both train on the same synthetic batches in the same order; the harness prints
the loss of both at every step, the final weight difference, and the pixel AUROC, image AUROC
and AUPRO@0.3 of both on the same test set (template: the mean latent of the training images in
eval mode; map: ``compose(|z - template|)``, channel mean; each side through its own code).
``--eval-every K`` also evaluates both every ``K`` steps (and after the last): the curve, and
each side's maximum per metric over it with its step, which is how the official ``train.py``
reports its results (the test set scored after every epoch, the maximum of each metric kept,
each possibly at another epoch). Evaluating does not change the training (eval mode: no
running-mean update, no random draw).

Modes (``--mode``): ``parity`` builds ours with the parity options (``clamp_scale`` = the
official soft-clamp constant, read from the official source at run time; ``norm_updates=3``, the
official memory-saving engine's three running-mean updates per step), so that the two differ by
float32 rounding only; ``defaults`` keeps our defaults, so the difference is the measured effect
of the deviations (models/pyramidflow/README.md); ``both`` runs one, then the other. ``control``
needs no official code: our model with memory saving against itself with plain autograd, same
weights and batches, which differ by float32 rounding only: how fast rounding differences grow
in this training run, the yardstick for the ``parity`` run's differences. ``official`` trains
the official model alone (from our initialization at ``--seed``; half the time of a pair), for
the official protocol's numbers beside a ``flowkit train`` run of ours: with ``--eval-every``
the test set is scored every K steps and each metric's maximum kept.

``--seed`` seeds the initial weights and the batch order; ``--data-seed`` the synthetic images
(default: the data ``flowkit train`` uses, so that its runs and the harness's share the test
set).

Weight mapping (ours -> official; block ``i`` of ``model.flow.blocks`` is the official
``flow.nf.moduleslst[i]``: both build every stack in the same red-black block order)::

    encoder.weight [C, 3]                -> inconv.weight [C, 3, 1, 1]
    flow.blocks.i.subnet.conv1.weight    -> nf.moduleslst.i.affineParams.conv.0.weight
    flow.blocks.i.subnet.conv2.weight    -> nf.moduleslst.i.affineParams.conv.2.weight
    flow.blocks.i.mix.lower              -> nf.moduleslst.i.conv1x1.w_l
    flow.blocks.i.mix.upper              -> nf.moduleslst.i.conv1x1.w_u
    flow.blocks.i.mix.log_s              -> nf.moduleslst.i.conv1x1.w_s
    flow.blocks.i.mix.permutation        -> nf.moduleslst.i.conv1x1.w_p
    flow.blocks.i.mix.sign               -> nf.moduleslst.i.conv1x1.s_sign
    flow.blocks.i.norm.running_mean      -> nf.moduleslst.i.affineParams.norm.running_mean

The LU masks (``lower_mask`` = ``l_mask`` = ``u_mask.T``) and the identity are fixed and equal.
Running means: the official buffer starts as ``zeros(1, 1, 1, 1)`` and takes the shape of the
batch mean; a CVN 'down' block's is at the condition's (full) resolution, ours is its
every-second-pixel subsample (the same numbers: the map is normalized per pixel). An all-zero
running mean maps to the official initial ``zeros(1, 1, 1, 1)``; a trained CVN 'down' one cannot
be mapped to the official (its other pixels are not stored), which only matters for mapping a
trained model, never for the harness (it maps at initialization). Our optimizer takes the
parameters in the official registration order, so that the clip's total norm sums in the same
order.

The official modules import torchvision (ResNet encoders, MVTec transforms) and albumentations
(augmentation) at module level; neither is used at these settings. Where one is not installed,
the harness puts a placeholder module in ``sys.modules`` for the duration of the import only
(using it raises); everything else the official code runs is its own.

Run::

    python -m benchmarks.parity_official --official PATH/PyramidFlow --autoflow PATH/autoFlow \\
        [--steps 100] [--mode both] [--sync] [--category nut] [--eval-every 24] \\
        [--out parity.json]
    python -m benchmarks.parity_official --official PATH/PyramidFlow --autoflow PATH/autoFlow \\
        --mode official --steps 120 --eval-every 24 --seed S --out official-S.json
    python -m benchmarks.parity_official --mode control [--sync]   # no official code needed

References:
    Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using Pyramid
    Normalizing Flow", CVPR 2023, arXiv:2303.02595.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import re
import statistics
import sys
import time
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.models.data.synthetic import SyntheticDataset
from flowkit.models.engine.config import SYNTHETIC_DATA_SEED
from flowkit.models.metrics import aupro, image_auroc, pixel_auroc
from flowkit.models.pyramidflow import PyramidFlow

from .common import print_table, write_json

__all__ = [
    "OFFICIAL_SETTINGS",
    "AloneReport",
    "OfficialSide",
    "OursSide",
    "ParityReport",
    "alone_record",
    "curve_maxima",
    "from_official_state",
    "load_official",
    "main",
    "official_clamp_scale",
    "official_state",
    "plain_twin",
    "run_alone",
    "run_parity",
    "synthetic_data",
]

OFFICIAL_SETTINGS: dict[str, Any] = {
    "channels": 16, "levels": 4, "num_stack": 4, "kernel_size": 7, "volume_norm": "channel",
    "image_size": 256, "batch_size": 2,
}
"""``train.py`` with ``--encoder none`` and its defaults (CVN: every class but four)."""

OFFICIAL_ADAM: dict[str, Any] = {"lr": 2e-4, "betas": (0.5, 0.9), "eps": 1e-4,
                                 "weight_decay": 1e-5}
"""``train.py``'s optimizer."""
OFFICIAL_CLIP = 1.0
"""``train.py``'s gradient-norm clip."""
PARITY_NORM_UPDATES = 3
"""Running-mean updates per step of the official memory-saving path: the forward, then the
inverse and the re-forward of autoFlow's backward."""

_ENCODER = ("encoder.weight", "inconv.weight")
_BLOCK_MAP = (  # (ours under flow.blocks.i, official under nf.moduleslst.i); parameters first,
    ("subnet.conv1.weight", "affineParams.conv.0.weight"),  # in the official's registration
    ("subnet.conv2.weight", "affineParams.conv.2.weight"),  # order
    ("mix.lower", "conv1x1.w_l"),
    ("mix.log_s", "conv1x1.w_s"),
    ("mix.upper", "conv1x1.w_u"),
    ("mix.permutation", "conv1x1.w_p"),
    ("mix.sign", "conv1x1.s_sign"),
    ("norm.running_mean", "affineParams.norm.running_mean"),
)
_PLACEHOLDERS = ("torchvision", "albumentations", "PIL")
_CLAMP_PATTERN = re.compile(r"self\.clamp\s*\*\s*([0-9.eE+-]+)\s*\*\s*torch\.atan")


# ----------------------------------------------------------------------------- weight mapping


def name_pairs(model: PyramidFlow) -> list[tuple[str, str]]:
    """``(our name, official name)`` of every mapped tensor, in the official parameter order."""
    pairs = [_ENCODER]
    for i in range(len(model.flow.blocks)):
        pairs += [(f"flow.blocks.{i}.{a}", f"nf.moduleslst.{i}.{b}") for a, b in _BLOCK_MAP]
    return pairs


def official_state(model: PyramidFlow) -> dict[str, Tensor]:
    """Our model's mapped tensors under the official names and shapes (copies).

    Raises:
        ValueError: a trained CVN 'down' running mean (the official one is full resolution).
    """
    ours = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    subsampled = {f"flow.blocks.{i}.norm.running_mean" for i, block in
                  enumerate(model.flow.blocks) if block.subnet.conv2.stride != (1, 1)}
    state = {}
    for mine, theirs in name_pairs(model):
        value = ours[mine].detach().clone()
        if mine == _ENCODER[0]:
            value = value[..., None, None]
        elif mine.endswith("running_mean") and not bool(value.any()):
            value = value.new_zeros(1, 1, 1, 1)  # the official initial buffer
        elif mine in subsampled:
            raise ValueError(
                f"{mine} is trained: the official CVN 'down' running mean is at full "
                "resolution, of which ours keeps every second pixel; map an untrained model"
            )
        state[theirs] = value
    return state


def from_official_state(model: PyramidFlow, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Official-named tensors brought to our names and shapes (a CVN 'down' running mean
    subsampled to every second pixel, as our block computes it)."""
    ours = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    out = {}
    for mine, theirs in name_pairs(model):
        value = state[theirs].detach()
        shape = ours[mine].shape
        if mine == _ENCODER[0]:
            value = value[..., 0, 0]
        elif value.shape != shape and value.dim() == 4 and value.shape[-2:] != (1, 1):
            value = F.interpolate(value, size=shape[-2:], mode="nearest")
        out[mine] = value.expand(shape).clone()
    return out


def load_mapped(module: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy ``state`` into ``module``: parameters in place, buffers replaced (the official
    running mean changes shape, so it is assigned)."""
    with torch.no_grad():
        for name, value in state.items():
            path, _, attr = name.rpartition(".")
            owner = module.get_submodule(path)
            if attr in owner._parameters:
                owner._parameters[attr].copy_(value)
            else:
                setattr(owner, attr, value.clone())


# ------------------------------------------------------------------------ the official code


class _Placeholder(types.ModuleType):
    """A module that is not installed: importable, unusable (every use raises)."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)

        def unavailable(*args: Any, **kwargs: Any) -> None:
            raise ImportError(
                f"{self.__name__}.{attr} is not installed: the parity harness replaced "
                f"{self.__name__} by a placeholder (encoder 'none' on synthetic data needs none)"
            )

        return unavailable


def _exec_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def _restored_modules(names: Sequence[str]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in names}
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_official(official: str | Path, autoflow: str | Path) -> types.SimpleNamespace:
    """Import the official ``model.py``, ``util.py`` and ``autoFlow.py`` from their folders.

    They import each other as top-level ``util`` and ``autoFlow``; those names (and any
    placeholder) are in ``sys.modules`` only during the import.

    Returns:
        A namespace with ``model`` (``PyramidFlow``, ``AffineParamBlock``, ...) and ``util``
        (``BatchDiffLoss``, ...).

    Raises:
        FileNotFoundError: a folder without the expected file, naming what to clone.
    """
    official, autoflow = Path(official), Path(autoflow)
    for folder, file, repo in ((official, "model.py", "gasharper/PyramidFlow"),
                               (official, "util.py", "gasharper/PyramidFlow"),
                               (autoflow, "autoFlow.py", "gasharper/autoFlow")):
        if not (folder / file).is_file():
            raise FileNotFoundError(
                f"{folder / file} not found: pass a checkout of https://github.com/{repo}"
            )
    names = ("autoFlow", "util", "pyramidflow_official_model") + tuple(
        name for base in _PLACEHOLDERS for name in (base, f"{base}.models", f"{base}.transforms")
    )
    with _restored_modules(names), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.custom_fwd
        for base in _PLACEHOLDERS:
            if importlib.util.find_spec(base) is None:
                sys.modules[base] = _Placeholder(base)
        _exec_file("autoFlow", autoflow / "autoFlow.py")
        util = _exec_file("util", official / "util.py")
        model = _exec_file("pyramidflow_official_model", official / "model.py")
    return types.SimpleNamespace(model=model, util=util)


def official_clamp_scale(official_model: types.ModuleType) -> float:
    """The soft-clamp constant the official ``AffineParamBlock.forward`` multiplies by.

    Raises:
        ValueError: the source does not have the expected expression.
    """
    source = inspect.getsource(official_model.AffineParamBlock.forward)
    found = _CLAMP_PATTERN.search(source)
    if found is None:
        raise ValueError(
            "the official AffineParamBlock.forward has no 'self.clamp * K * torch.atan': "
            "another version of the code; pass the constant with --clamp-scale"
        )
    return float(found.group(1))


# ---------------------------------------------------------------------------------- two sides


class OursSide:
    """Our model, trained by the harness's loop with our optimizer settings."""

    def __init__(self, model: PyramidFlow, name: str = "ours") -> None:
        self.name, self.model = name, model
        named = dict(model.named_parameters())
        self.params = [named[mine] for mine, _ in name_pairs(model) if mine in named]
        settings = dict(model.optimizer_settings())
        self.clip = settings.pop("clip_grad_norm")
        if settings != OFFICIAL_ADAM or self.clip != OFFICIAL_CLIP:
            warnings.warn(f"our optimizer settings {settings} (clip {self.clip}) are not the "
                          f"official {OFFICIAL_ADAM} (clip {OFFICIAL_CLIP})", stacklevel=2)
        self.optimizer = torch.optim.Adam(self.params, **settings)

    def loss(self, images: Tensor) -> Tensor:
        return self.model.loss(images)

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def anomaly_maps(self, normal: Tensor, test: Tensor) -> Tensor:
        """Template from ``normal`` (one image at a time), maps of ``test`` (4 at a time)."""
        self.model.fit_normal(normal.split(1))
        return torch.cat([self.model.anomaly_map(batch) for batch in test.split(4)])

    def state_as_ours(self) -> dict[str, Tensor]:
        ours = {**dict(self.model.named_parameters()), **dict(self.model.named_buffers())}
        return {mine: ours[mine].detach() for mine, _ in name_pairs(self.model)}


class OfficialSide:
    """The official model, trained and evaluated the way its ``train.py`` does."""

    def __init__(self, code: types.SimpleNamespace, ours: PyramidFlow, batch_size: int,
                 name: str = "official") -> None:
        config = ours.config
        self.name, self.ours = name, ours
        vn_dims = (0, 1) if config["volume_norm"] == "channel" else (0, 2, 3)
        self.flow = code.model.PyramidFlow(
            0, config["channels"], config["levels"], config["num_stack"], config["kernel_size"],
            vn_dims, savemem=True,
        )
        theirs = [name for name, p in self.flow.named_parameters() if p.requires_grad]
        wanted = [official for mine, official in name_pairs(ours)
                  if mine in dict(ours.named_parameters())]
        if theirs[: len(wanted)] != wanted:
            first = [(a, b) for a, b in zip(theirs, wanted, strict=False) if a != b][:3]
            raise ValueError(
                "the official model's parameters are not where the mapping expects them: "
                f"first differences (official, expected) {first}"
            )
        for i, block in enumerate(ours.flow.blocks):
            theirs_lu = self.flow.nf.moduleslst[i].conv1x1
            if not (torch.equal(theirs_lu.l_mask, block.mix.lower_mask)
                    and torch.equal(theirs_lu.u_mask, block.mix.lower_mask.T)):
                raise ValueError(f"block {i}: the official LU masks differ from ours")
        load_mapped(self.flow, official_state(ours))
        self.batch_loss = code.util.BatchDiffLoss(batch_size, p=2)
        # The official optimizer also holds inconv.weight, which never has a gradient (the
        # encoder runs under no_grad): Adam and the clip skip it, so leaving it out is the same.
        named = dict(self.flow.named_parameters())
        self.params = [named[name] for name in wanted]
        self.optimizer = torch.optim.Adam(self.params, **OFFICIAL_ADAM)
        self.clip = OFFICIAL_CLIP

    def _normalize(self, images: Tensor) -> Tensor:
        return (images - self.ours.mean) / self.ours.std  # what the official dataset does

    def loss(self, images: Tensor) -> Tensor:
        pyramid = self.flow(self._normalize(images))
        diffs = self.batch_loss(pyramid)
        return torch.fft.fft2(self.flow.pyramid.compose_pyramid(diffs).mean(1)).abs().mean()

    def train(self, mode: bool) -> None:
        self.flow.train(mode)

    @torch.no_grad()
    def anomaly_maps(self, normal: Tensor, test: Tensor) -> Tensor:
        self.flow.eval()
        sums, count = None, 0
        for image in normal.split(1):
            latents = self.flow(self._normalize(image))
            sums = list(latents) if sums is None else [a + b for a, b in zip(sums, latents,
                                                                               strict=True)]
            count += 1
        template = [s / count for s in sums]
        maps = []
        for batch in test.split(4):
            latents = self.flow(self._normalize(batch))
            diffs = [(z - t).abs() for z, t in zip(latents, template, strict=True)]
            maps.append(self.flow.pyramid.compose_pyramid(diffs).mean(1, keepdim=True))
        return torch.cat(maps)

    def state_as_ours(self) -> dict[str, Tensor]:
        return from_official_state(self.ours, self.flow.state_dict())


# ------------------------------------------------------------------------------- the harness


def curve_maxima(curve: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Each side's maximum of each metric over ``curve`` and its step (the earliest on a tie):
    the official ``train.py``'s test-set selection, one metric at a time.

    Args:
        curve: ``[{"step": int, "metrics": {side: {metric: value}}}, ...]``.

    Raises:
        ValueError: an empty curve (a run without ``eval_every``).
    """
    if not curve:
        raise ValueError("no evaluation curve: run the harness with eval_every (a step count)")
    maxima: dict[str, dict[str, dict[str, float]]] = {}
    for side, metrics in curve[0]["metrics"].items():
        maxima[side] = {}
        for metric in metrics:
            best = max(curve, key=lambda point: (point["metrics"][side][metric], -point["step"]))
            maxima[side][metric] = {"value": best["metrics"][side][metric], "step": best["step"]}
    return maxima


@dataclass
class ParityReport:
    """Per-step losses of both sides, the final weight difference, the metrics of both."""

    mode: str
    losses: list[tuple[float, float]] = field(default_factory=list)
    gradient_rel: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    weight_max_abs: float = 0.0
    weight_max_rel: float = 0.0
    worst_tensor: str = ""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)

    def test_maxima(self) -> dict[str, dict[str, dict[str, float]]]:
        """Each side's maximum of each metric over ``curve`` (see :func:`curve_maxima`)."""
        return curve_maxima(self.curve)

    def differences(self) -> list[float]:
        """``|loss_a - loss_b| / |loss_b|`` per step."""
        return [abs(a - b) / max(abs(b), 1e-30) for a, b in self.losses]

    def summary(self) -> dict[str, float]:
        diffs = self.differences()
        absolute = [abs(a - b) for a, b in self.losses]
        return {
            "steps": len(diffs), "loss_rel_max": max(diffs), "loss_rel_median":
            statistics.median(diffs), "loss_abs_max": max(absolute),
            "loss_abs_median": statistics.median(absolute), "first_step_rel": diffs[0],
            "grad_rel_max": max(self.gradient_rel), "grad_rel_median":
            statistics.median(self.gradient_rel),
        }


def synthetic_data(category: str, size: int, num_train: int, seed: int = 0
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Training images, test images and test masks of the built-in synthetic data."""
    train = SyntheticDataset(category, "train", image_size=size, num_train=num_train, seed=seed)
    test = SyntheticDataset(category, "test", image_size=size, seed=seed)
    items = [test[i] for i in range(len(test))]
    return (torch.stack([train[i].image for i in range(len(train))]),
            torch.stack([item.image for item in items]),
            torch.stack([item.mask for item in items]))


def batch_order(count: int, batch_size: int, steps: int, seed: int) -> list[Tensor]:
    """Index batches of seeded per-epoch shuffles, dropping the last partial batch."""
    generator = torch.Generator().manual_seed(seed)
    batches: list[Tensor] = []
    while len(batches) < steps:
        order = torch.randperm(count, generator=generator)
        batches += list(order[: count - count % batch_size].split(batch_size))
    return batches[:steps]


def _train_step(side: Any, images: Tensor) -> float:
    side.optimizer.zero_grad()
    loss = side.loss(images)
    loss.backward()
    nn.utils.clip_grad_norm_(side.params, max_norm=side.clip)
    side.optimizer.step()
    return float(loss.detach())


def _metrics(maps: Tensor, masks: Tensor) -> dict[str, float]:
    labels = masks.flatten(1).amax(1)
    return {"pixel_auroc": pixel_auroc(maps, masks),
            "image_auroc": image_auroc(maps.flatten(1).amax(1), labels),
            "aupro_0.3": aupro(maps, masks)}


def _evaluate(sides: Sequence[Any], train_images: Tensor, test_images: Tensor,
              test_masks: Tensor) -> dict[str, dict[str, float]]:
    """The metrics of each side on the test set (template from ``train_images``, in eval
    mode); each side is left in training mode."""
    metrics = {}
    for side in sides:
        side.train(False)
        metrics[side.name] = _metrics(side.anomaly_maps(train_images, test_images), test_masks)
        side.train(True)
    return metrics


def _evaluates_after(step: int, eval_every: int | None, steps: int) -> bool:
    """Whether the curve takes a point after ``step`` (0-based): every ``eval_every`` steps
    and after the last."""
    return eval_every is not None and ((step + 1) % eval_every == 0 or step + 1 == steps)


def _copy_parameters(source: Any, target: Any) -> None:
    """``target``'s parameters set to ``source``'s (both lists in the official order)."""
    with torch.no_grad():
        for mine, theirs in zip(source.params, target.params, strict=True):
            theirs.copy_(mine)


def _gradient_difference(a: Any, b: Any) -> float:
    """The largest ``max|g_a - g_b| / max|g_b|`` over the parameter tensors."""
    worst = 0.0
    for pa, pb in zip(a.params, b.params, strict=True):
        if pa.grad is None or pb.grad is None:
            continue
        scale = max(float(pb.grad.double().abs().max()), 1e-30)
        worst = max(worst, float((pa.grad.double() - pb.grad.double()).abs().max()) / scale)
    return worst


def run_parity(a: Any, b: Any, mode: str, train_images: Tensor, test_images: Tensor,
               test_masks: Tensor, steps: int, batch_size: int, seed: int = 0,
               log: Callable[[str], None] | None = None, sync: bool = False,
               eval_every: int | None = None) -> ParityReport:
    """Train sides ``a`` and ``b`` on the same batches in the same order, then evaluate both.

    Args:
        a, b: :class:`OursSide` / :class:`OfficialSide` (or any object with their interface).
        mode: a label for the report.
        train_images: ``[N, 3, H, W]`` in ``[0, 1]``.
        test_images, test_masks: ``[M, 3, H, W]`` and ``[M, 1, H, W]``.
        steps: optimizer steps.
        batch_size: images per step.
        seed: of the batch order.
        log: called with one line per step.
        sync: before every step, set ``b``'s parameters to ``a``'s, so that each step's loss
            and gradient difference is that of one step on the same weights (float32
            training is chaotic: free-running trajectories part by more than rounding after
            a few dozen steps, see the ``control`` mode). The final weights then differ by one
            step; running means are not synchronized (they do not enter the loss).
        eval_every: also evaluate both sides after every ``eval_every`` steps (and after the
            last) into ``report.curve``; ``report.test_maxima()`` is then each side's best.

    Raises:
        ValueError: ``eval_every`` below 1.
    """
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be a positive step count or None, got {eval_every}")
    report = ParityReport(mode, seconds={a.name: 0.0, b.name: 0.0})
    a.train(True)
    b.train(True)
    batches = batch_order(len(train_images), batch_size, steps, seed)
    for step, index in enumerate(batches):
        images = train_images[index]
        losses = []
        if sync:
            _copy_parameters(a, b)
        for side in (a, b):
            start = time.perf_counter()
            losses.append(_train_step(side, images))
            report.seconds[side.name] += time.perf_counter() - start
        report.losses.append((losses[0], losses[1]))
        report.gradient_rel.append(_gradient_difference(a, b))
        if log is not None:
            log(f"step {step:4d}  {a.name} {losses[0]:.8g}  {b.name} {losses[1]:.8g}  "
                f"rel diff {report.differences()[-1]:.3e}  grad rel diff "
                f"{report.gradient_rel[-1]:.3e}")
        if _evaluates_after(step, eval_every, len(batches)):
            report.curve.append({"step": step + 1, "metrics": _evaluate(
                (a, b), train_images, test_images, test_masks)})
            if log is not None:
                log(f"step {step + 1:4d}  evaluated: " + "  ".join(
                    f"{side} " + " ".join(f"{k} {v:.4f}" for k, v in m.items())
                    for side, m in report.curve[-1]["metrics"].items()))
    state_a, state_b = a.state_as_ours(), b.state_as_ours()
    for name, value in state_a.items():
        diff = float((value.double() - state_b[name].double()).abs().max())
        rel = diff / max(float(state_b[name].double().abs().max()), 1e-30)
        report.weight_max_abs = max(report.weight_max_abs, diff)
        if rel >= report.weight_max_rel:
            report.weight_max_rel, report.worst_tensor = rel, name
    report.metrics = (report.curve[-1]["metrics"] if report.curve
                      else _evaluate((a, b), train_images, test_images, test_masks))
    return report


@dataclass
class AloneReport:
    """One side trained alone: its loss per step, its training time, its metrics after the
    last step and, with ``eval_every``, after every ``eval_every`` steps."""

    mode: str
    side: str
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[dict[str, Any]] = field(default_factory=list)

    def test_maxima(self) -> dict[str, dict[str, float]]:
        """Each metric's maximum over ``curve`` and its step (see :func:`curve_maxima`)."""
        return curve_maxima(self.curve)[self.side]


def alone_record(report: AloneReport, **run: Any) -> dict[str, Any]:
    """The JSON record of a run alone (``--out``; ``benchmarks.official_comparison`` reads
    it): the report, its ``test_maxima`` (``None`` without a curve) and ``run``'s fields
    (``seed``, ``data_seed``, ``category``, ``image_size``, ``num_train``)."""
    return {**asdict(report), **run,
            "test_maxima": report.test_maxima() if report.curve else None}


def run_alone(side: Any, mode: str, train_images: Tensor, test_images: Tensor,
              test_masks: Tensor, steps: int, batch_size: int, seed: int = 0,
              log: Callable[[str], None] | None = None,
              eval_every: int | None = None) -> AloneReport:
    """Train one side on the batches :func:`run_parity` would feed it, evaluating as it does.

    The official ``train.py``'s protocol without a second model beside it (half the time): the
    official side's ``eval_every`` curve and ``test_maxima()`` are what that script reports.
    Arguments as :func:`run_parity`'s; the losses and curve are those of side ``a`` of a
    :func:`run_parity` run on the same arguments.

    Raises:
        ValueError: ``eval_every`` below 1.
    """
    if eval_every is not None and eval_every < 1:
        raise ValueError(f"eval_every must be a positive step count or None, got {eval_every}")
    report = AloneReport(mode, side.name)
    side.train(True)
    batches = batch_order(len(train_images), batch_size, steps, seed)
    for step, index in enumerate(batches):
        start = time.perf_counter()
        report.losses.append(_train_step(side, train_images[index]))
        report.seconds += time.perf_counter() - start
        if log is not None:
            log(f"step {step:4d}  {side.name} {report.losses[-1]:.8g}")
        if _evaluates_after(step, eval_every, len(batches)):
            report.curve.append({"step": step + 1, "metrics": _evaluate(
                (side,), train_images, test_images, test_masks)})
            if log is not None:
                log(f"step {step + 1:4d}  evaluated: " + " ".join(
                    f"{k} {v:.4f}" for k, v in report.curve[-1]["metrics"][side.name].items()))
    report.metrics = (report.curve[-1]["metrics"] if report.curve else _evaluate(
        (side,), train_images, test_images, test_masks))[side.name]
    return report


def build_ours(mode: str, clamp_scale: float, seed: int, **overrides: Any) -> PyramidFlow:
    """Our model at the official settings (``overrides`` replace them), seeded."""
    settings = {"memory_saving": True, **{k: v for k, v in OFFICIAL_SETTINGS.items()
                                          if k != "batch_size"}}
    settings.update(overrides)
    if mode == "parity":
        settings.update(clamp_scale=clamp_scale, norm_updates=PARITY_NORM_UPDATES)
    torch.manual_seed(seed)
    return PyramidFlow(encoder="none", **settings)


def plain_twin(model: PyramidFlow) -> OursSide:
    """``model``'s copy trained with plain autograd (the ``control`` side)."""
    twin = PyramidFlow(**{**model.config, "memory_saving": False})
    twin.load_state_dict(model.state_dict())
    return OursSide(twin, name="ours-plain")


def _run_official_alone(args: argparse.Namespace, code: types.SimpleNamespace,
                        data: tuple[Tensor, Tensor, Tensor]) -> AloneReport:
    """``--mode official``: the official model alone, from our initialization at ``--seed``."""
    ours = build_ours("defaults", 0.0, args.seed, image_size=args.image_size,
                      volume_norm=args.volume_norm)
    official = OfficialSide(code, ours, OFFICIAL_SETTINGS["batch_size"])
    print(f"== mode official: the official model alone, initialized as ours {ours.config}")
    report = run_alone(official, "official", *data, args.steps, OFFICIAL_SETTINGS["batch_size"],
                       args.seed, log=None if args.quiet else print, eval_every=args.eval_every)
    row = {"mode": report.mode, "steps": len(report.losses),
           **{f"last {k}": f"{v:.4f}" for k, v in report.metrics.items()},
           "s/step": f"{report.seconds / len(report.losses):.2f}"}
    if report.curve:
        row.update({f"max {k} (step)": f"{m['value']:.4f} ({m['step']})"
                    for k, m in report.test_maxima().items()})
    print_table([row], list(row))
    if args.out:
        write_json(args.out, [alone_record(report, seed=args.seed, data_seed=args.data_seed,
                                           category=args.category, image_size=args.image_size,
                                           num_train=args.num_train)])
    return report


def main(argv: Sequence[str] | None = None) -> list[ParityReport] | list[AloneReport]:
    """The command line; prints the per-step table and the summaries."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help="checkout of gasharper/PyramidFlow")
    parser.add_argument("--autoflow", help="checkout of gasharper/autoFlow")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--mode", choices=["parity", "defaults", "both", "control", "official"],
                        default="both",
                        help="official: the official model alone (no second model), as its "
                             "train.py trains and, with --eval-every, selects")
    parser.add_argument("--category", default="nut", help="synthetic category")
    parser.add_argument("--num-train", type=int, default=48)
    parser.add_argument("--image-size", type=int, default=OFFICIAL_SETTINGS["image_size"])
    parser.add_argument("--volume-norm", choices=["channel", "spatial"],
                        default=OFFICIAL_SETTINGS["volume_norm"])
    parser.add_argument("--clamp-scale", type=float, default=None,
                        help="the official soft-clamp constant (default: read from its source)")
    parser.add_argument("--seed", type=int, default=0,
                        help="of the initial weights and the batch order")
    parser.add_argument("--data-seed", type=int, default=SYNTHETIC_DATA_SEED,
                        help="of the synthetic images (default: the data flowkit train uses)")
    parser.add_argument("--sync", action="store_true",
                        help="reset the second model's weights to ours before every step")
    parser.add_argument("--eval-every", type=int, default=None, metavar="K",
                        help="also evaluate both models every K steps and after the last; "
                             "prints each one's maximum per metric over them (the official "
                             "train.py's test-set selection)")
    parser.add_argument("--quiet", action="store_true", help="no per-step lines")
    parser.add_argument("--out", help="write the reports as JSON")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.eval_every is not None and args.eval_every < 1:
        parser.error(f"--eval-every must be at least 1 (steps), got {args.eval_every}")
    if args.mode != "control" and not (args.official and args.autoflow):
        parser.error(f"--mode {args.mode} needs --official and --autoflow (checkouts)")
    if args.mode == "official" and args.sync:
        parser.error("--sync needs two models; --mode official trains one")
    code = load_official(args.official, args.autoflow) if args.mode != "control" else None
    data = synthetic_data(args.category, args.image_size, args.num_train, args.data_seed)
    if args.mode == "official":
        return [_run_official_alone(args, code, data)]
    clamp_scale = args.clamp_scale or (official_clamp_scale(code.model) if code else 0.0)
    modes = ["parity", "defaults"] if args.mode == "both" else [args.mode]
    reports = []
    for mode in modes:
        mode_label = f"{mode}, synced" if args.sync else mode
        ours = build_ours(mode, clamp_scale, args.seed, image_size=args.image_size,
                          volume_norm=args.volume_norm)
        other = plain_twin(ours) if code is None else OfficialSide(
            code, ours, OFFICIAL_SETTINGS["batch_size"])
        print(f"== mode {mode}: ours {ours.config}")
        report = run_parity(OursSide(ours), other, mode_label, *data, args.steps,
                            OFFICIAL_SETTINGS["batch_size"], args.seed,
                            log=None if args.quiet else print, sync=args.sync,
                            eval_every=args.eval_every)
        reports.append(report)
    rows = [{"mode": r.mode, **{k: f"{v:.3g}" for k, v in r.summary().items()},
             "weight_rel_max": f"{r.weight_max_rel:.3g}", "worst": r.worst_tensor,
             **{f"{side}:{k}": f"{v:.4f}" for side, m in r.metrics.items() for k, v in m.items()},
             **{f"s/step {side}": f"{t / len(r.losses):.2f}" for side, t in r.seconds.items()}}
            for r in reports]
    for row in rows:
        print_table([row], list(row))
    for r in (r for r in reports if r.curve):
        maxima = r.test_maxima()
        print(f"== {r.mode}: each metric's maximum over the evaluations (its step)")
        print_table([{"side": side, **{k: f"{m['value']:.4f} ({m['step']})"
                                       for k, m in best.items()}}
                     for side, best in maxima.items()], ["side", *next(iter(maxima.values()))])
    if args.out:
        write_json(args.out, [{**asdict(r), "summary": r.summary(),
                               "test_maxima": r.test_maxima() if r.curve else None,
                               "clamp_scale_official": clamp_scale} for r in reports])
    return reports


if __name__ == "__main__":
    main()
