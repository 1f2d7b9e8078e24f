"""PyramidFlow's frozen input maps: a fixed semi-orthogonal 1x1 conv, or a ResNet-18 stem.

Both are frozen: never trained, always in eval mode (the official code lets the ResNet's
BatchNorm statistics drift in training mode; ours never move).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import flowkit
from flowkit.core import zero_logdet
from flowkit.kernels.choice import Choice

__all__ = ["Encoder", "ResNet18Stem", "SemiOrthogonalConv1x1", "build_encoder"]


class Encoder(Choice):
    """The input map of PyramidFlow."""

    NONE = "none"  # a fixed random semi-orthogonal 1x1 conv 3 -> C, full resolution
    RESNET18 = "resnet18"  # ResNet-18 conv1..layer1 from a local weights file, 64 ch, 1/4 size


class SemiOrthogonalConv1x1(flowkit.InjectiveFlow):
    """``y = W x`` per pixel with a fixed ``W [C_out, C_in]`` of orthonormal columns.

    Injective for ``C_out >= C_in``: the exact left inverse is the least-squares solution
    ``x = pinv(W) y`` (``W^T y`` up to the rounding of ``W^T W = I``). Orthogonally
    initialized from torch's generator and kept as a buffer: never trained, restored by a
    checkpoint.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"a semi-orthogonal map {in_channels} -> {out_channels} channels loses "
                f"information; use at least {in_channels} output channels"
            )
        weight = torch.empty(out_channels, in_channels)
        nn.init.orthogonal_(weight)
        self.register_buffer("weight", weight)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map each pixel's channels by ``W``."""
        return F.conv2d(x, self.weight.to(x.dtype)[..., None, None]), zero_logdet(x)

    def inverse(self, y: Tensor) -> Tensor:
        """The least-squares preimage ``pinv(W) y``."""
        wide = torch.promote_types(y.dtype, torch.float32)
        pinv = torch.linalg.pinv(self.weight.to(wide))
        return F.conv2d(y.to(wide), pinv[..., None, None]).to(y.dtype)


class _BasicBlock(nn.Module):
    """ResNet's basic residual block at constant width (torchvision's parameter names)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class ResNet18Stem(nn.Module):
    """ResNet-18's ``conv1 .. layer1``: ``[B, 3, H, W] -> [B, 64, H/4, W/4]``.

    Parameter names match torchvision's ``resnet18``, so its ImageNet state dict loads from a
    local file (``torch.save(torchvision.models.resnet18(weights=...).state_dict(), path)``);
    nothing is downloaded.

    Args:
        weights: path of the state dict file.
    """

    channels = 64
    stride = 4

    def __init__(self, weights: str | Path) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = nn.Sequential(_BasicBlock(64), _BasicBlock(64))
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"ResNet-18 weights file {path} not found: save torchvision's resnet18 ImageNet "
                "state dict there (flowkit downloads nothing), or use --encoder none"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
        mine = self.state_dict()
        missing = sorted(set(mine) - set(state))
        if missing:
            raise ValueError(
                f"{path} is not a ResNet-18 state dict: it lacks {', '.join(missing[:4])}"
                + (" ..." if len(missing) > 4 else "")
            )
        self.load_state_dict({k: state[k] for k in mine})

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer1(F.max_pool2d(x, 3, stride=2, padding=1))


def build_encoder(
    encoder: Encoder | str, channels: int, weights: str | None
) -> tuple[nn.Module, int, int]:
    """The frozen encoder, its output channels and its stride."""
    encoder = Encoder(encoder)
    if encoder is Encoder.NONE:
        module: nn.Module = SemiOrthogonalConv1x1(3, channels)
        out_channels, stride = channels, 1
    else:
        if weights is None:
            raise ValueError(
                "--encoder resnet18 needs --encoder-weights PATH (torchvision's resnet18 "
                "state dict saved to a local file); flowkit downloads nothing"
            )
        module = ResNet18Stem(weights)
        out_channels, stride = ResNet18Stem.channels, ResNet18Stem.stride
    module.requires_grad_(False)
    return module.eval(), out_channels, stride
