"""PyramidFlow: a pyramid normalizing flow trained from scratch, contrasting latent templates.

An image is mapped by a frozen encoder, split into a Laplacian pyramid, and transformed by
stacks of scale-wise pyramid coupling blocks into latent levels. Training pulls the latents of
normal images together (:mod:`.loss`); after training the template is the mean latent of the
training images, and a test image's anomaly map is ``compose(|z - template|)``, channel mean.

References:
    Lei et al., "PyramidFlow: High-Resolution Defect Contrastive Localization using Pyramid
    Normalizing Flow", CVPR 2023, arXiv:2303.02595.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

import flowkit
from flowkit.kernels.soft_clamp import SOFT_CLAMP_SCALE
from flowkit.layers import LaplacianPyramid, PyramidCoupling, VolumeNormMode
from flowkit.pyramid import compose

from ..base import AnomalyModel, OptimizerSettings, register_model
from ..data.augment import MVTEC_TEXTURES
from .defaults import defaults_for
from .encoder import Encoder, build_encoder
from .loss import fourier_pair_loss

__all__ = ["PyramidFlow", "block_order"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PYRAMID_MODE = "pyramidflow"


def block_order(levels: int) -> list[tuple[str, int]]:
    """One stack's ``(kind, level)`` blocks: a red-black order touching every level once.

    First the even-starting pass (``dual`` at 0, 2, ...; ``down`` at the last pair), then
    ``up`` at level 0 and the odd-starting pass.

    Example:
        >>> block_order(4)
        [('dual', 0), ('down', 2), ('up', 0), ('dual', 1)]
    """
    if levels < 2:
        raise ValueError(f"PyramidFlow needs at least 2 pyramid levels, got {levels}")
    order = []
    for start in (0, 1):
        if start == 1:
            order.append(("up", 0))
        for level in range(start, levels, 2):
            if level + 2 < levels:
                order.append(("dual", level))
            elif level + 1 < levels:
                order.append(("down", level))
    return order


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@register_model("pyramidflow")
class PyramidFlow(AnomalyModel):
    """PyramidFlow on images in ``[0, 1]`` (normalized inside with ImageNet statistics).

    Args:
        channels: channels of the flow (the 1x1 encoder's output; 64 with ResNet-18).
        levels: pyramid levels ``L``.
        num_stack: stacks of ``block_order(L)`` blocks.
        kernel_size: kernel of the coupling subnets' convolutions.
        volume_norm: ``"channel"`` (CVN) or ``"spatial"`` (SVN).
        encoder: ``"none"`` (semi-orthogonal 1x1 conv) or ``"resnet18"``.
        encoder_weights: local ResNet-18 state dict file (``encoder="resnet18"`` only).
        image_size: training image size (sizes the template and CVN buffers; other sizes
            resize them, so a checkpoint evaluates at any valid size).
        memory_saving: train with the reversible engine (activations rebuilt in backward).
        clamp: soft-clamp bound of the log-scales.
        clamp_scale: the soft clamp's ``2/pi``; a parity option (the official code uses a
            rounded constant, see the README's deviations).
        norm_updates: volume-normalization running-mean updates per training step: 1 (right),
            3 reproduces the official memory-saving code (a parity option).
    """

    def __init__(
        self,
        channels: int = 16,
        levels: int = 4,
        num_stack: int = 4,
        kernel_size: int = 7,
        volume_norm: str = VolumeNormMode.CHANNEL.value,
        encoder: str = Encoder.NONE.value,
        encoder_weights: str | None = None,
        image_size: int | tuple[int, int] = 256,
        memory_saving: bool = True,
        clamp: float = 2.0,
        clamp_scale: float = SOFT_CLAMP_SCALE,
        norm_updates: int = 1,
    ) -> None:
        super().__init__(
            channels=channels, levels=levels, num_stack=num_stack, kernel_size=kernel_size,
            volume_norm=VolumeNormMode(volume_norm).value, encoder=Encoder(encoder).value,
            encoder_weights=encoder_weights, image_size=image_size, memory_saving=memory_saving,
            clamp=clamp, clamp_scale=clamp_scale, norm_updates=norm_updates,
        )
        self.encoder, width, self.encoder_stride = build_encoder(encoder, channels, encoder_weights)
        self.levels = levels
        self.pyramid = LaplacianPyramid(levels, PYRAMID_MODE)
        height, width_px = (n // self.encoder_stride for n in _pair(image_size))
        sizes = [(height >> k, width_px >> k) for k in range(levels)]
        blocks = [
            PyramidCoupling(
                kind, level, levels, width, kernel_size=kernel_size, clamp=clamp,
                volume_norm=volume_norm, clamp_scale=clamp_scale, norm_updates=norm_updates,
                target_size=sizes[level if kind == "up" else level + 1],
            )
            for _ in range(num_stack)
            for kind, level in block_order(levels)
        ]
        self.flow = flowkit.Sequential(*blocks, memory_saving=memory_saving)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        for k, size in enumerate(sizes):
            self.register_buffer(f"template_{k}", torch.zeros(1, width, *size))
        self.register_buffer("has_template", torch.tensor(False))

    default_image_size = 256  # the paper's, encoder "none"
    default_epochs = 15
    default_batch_size = 2
    min_batch_size = 2  # the Fourier loss compares the images of a batch in pairs

    augment_rule = "MVTec AD's five textures only, as the official code"

    @classmethod
    def defaults_for(cls, category: str) -> dict[str, Any]:
        """The paper's per-category pyramid levels and volume normalization."""
        return defaults_for(category)

    @classmethod
    def augments_by_default(cls, category: str) -> bool:
        """MVTec AD's five textures, as the official code; not the synthetic textures: at 5
        epochs none scored better turned and gravel, steel and fabric (256 px) scored worse
        (3 seeds each; benchmarks/RESULTS.md, "Texture augmentation: which textures to
        turn")."""
        return category in MVTEC_TEXTURES

    def train(self, mode: bool = True) -> PyramidFlow:
        """Set the mode of the flow; the frozen encoder stays in eval mode."""
        super().train(mode)
        self.encoder.eval()
        return self

    def size_multiple(self) -> int:
        """Every pyramid level must halve evenly: ``2^(L-1)`` times the encoder stride."""
        return self.encoder_stride * 2 ** (self.levels - 1)

    def optimizer_settings(self) -> OptimizerSettings:
        """The paper's Adam (CS-Flow's settings) with gradient-norm clipping at 1."""
        return OptimizerSettings(
            lr=2e-4, betas=(0.5, 0.9), eps=1e-4, weight_decay=1e-5, clip_grad_norm=1.0
        )

    def features(self, images: Tensor) -> Tensor:
        """The frozen encoder's map of normalized images (no gradient)."""
        with torch.no_grad():
            features = self.encoder((images - self.mean) / self.std)
        return features[0] if isinstance(self.encoder, flowkit.Flow) else features

    def latents(self, images: Tensor) -> tuple[Tensor, ...]:
        """The latent pyramid ``(z_0, ..., z_{L-1})``, finest first."""
        levels, _ = self.pyramid(self.features(images))
        z, _ = self.flow(levels)
        return z

    def loss(self, images: Tensor) -> Tensor:
        """The Fourier loss of pairwise latent differences (batch of at least 2)."""
        return fourier_pair_loss(self.latents(images), PYRAMID_MODE)

    def templates(self, sizes: list[torch.Size]) -> list[Tensor]:
        """The template levels, resized (bilinearly) where the images have another size."""
        out = []
        for k, size in enumerate(sizes):
            template = getattr(self, f"template_{k}")
            if tuple(template.shape[-2:]) != tuple(size):
                template = F.interpolate(template, size=tuple(size), mode="bilinear",
                                         align_corners=False)
            out.append(template)
        return out

    @torch.no_grad()
    def fit_normal(self, batches: Iterable[Tensor]) -> None:
        """The template: the mean latent of the training images, in eval mode."""
        was_training = self.training
        self.eval()
        sums: list[Tensor] | None = None
        count = 0
        for images in batches:
            z = self.latents(images.to(self.mean.device))
            batch_sums = [level.double().sum(0, keepdim=True) for level in z]
            sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums,
                                                                          strict=True)]
            count += images.shape[0]
        if sums is None:
            raise ValueError("fit_normal needs at least one batch of normal training images")
        for k, total in enumerate(sums):
            template = getattr(self, f"template_{k}")
            mean = (total / count).to(template.dtype)
            if mean.shape != template.shape:  # fitted at another size: store at the buffer's
                mean = F.interpolate(mean, size=template.shape[-2:], mode="bilinear",
                                     align_corners=False)
            template.copy_(mean)
        self.has_template.fill_(True)
        self.train(was_training)

    @torch.no_grad()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """``compose(|z - template|)``, channel mean, at the images' resolution ``[B, 1, H, W]``."""
        # Not while tracing (a traced program cannot branch on a buffer); flowkit export
        # runs the model eagerly first.
        if not torch.compiler.is_compiling() and not bool(self.has_template):
            raise RuntimeError(
                "PyramidFlow has no template yet: call fit_normal(training images) after "
                "training (flowkit train does)"
            )
        z = self.latents(images)
        templates = self.templates([level.shape[-2:] for level in z])
        diffs = [(level - template).abs() for level, template in zip(z, templates, strict=True)]
        amap = compose(diffs, PYRAMID_MODE).mean(dim=1, keepdim=True)
        if amap.shape[-2:] != images.shape[-2:]:
            amap = F.interpolate(amap, size=images.shape[-2:], mode="bilinear",
                                 align_corners=False)
        return amap

    def as_flow(self) -> flowkit.Sequential:
        """The invertible part (encoder if invertible, pyramid, couplings) as one flow.

        Not registered as a submodule (it shares this model's layers), for property checks.
        """
        parts = [self.pyramid, self.flow]
        if isinstance(self.encoder, flowkit.Flow):
            parts.insert(0, self.encoder)
        return flowkit.Sequential(*parts)
