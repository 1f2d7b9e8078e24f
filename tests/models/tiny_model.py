"""A tiny registered model for the application's tests: a denoising 1x1-conv autoencoder.

Importing this module registers it as ``"tiny"``; subprocess tests list the module in
``FLOWKIT_MODEL_MODULES`` so the command line offers it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.models.base import AnomalyModel, OptimizerSettings, register_model

__all__ = ["TINY", "TINY_MODULE", "TinyAutoencoder", "raise_in_loss_at"]

TINY = "tiny"
TINY_MODULE = __name__


@register_model(TINY)
class TinyAutoencoder(AnomalyModel):
    """Reconstructs each pixel's colour through ``hidden`` channels; the map is the error.

    Training adds Gaussian noise from torch's global generator, so a resumed run only equals
    an uninterrupted one when the random states are restored. ``fit_normal`` stores the mean
    map value of the normal images (a buffer), subtracted from every map.

    Args:
        hidden: bottleneck channels.
        noise: standard deviation of the training noise.
        levels: image sides must be multiples of ``2 ** (levels - 1)``, as for a pyramid.
    """

    default_image_size = 32
    default_epochs = 2
    default_batch_size = 4
    synthetic_image_size = 32
    synthetic_epochs = 2
    presets = {"wide": {"hidden": 4, "epochs": 3, "image_size": 64}}

    def __init__(self, hidden: int = 2, noise: float = 0.1, levels: int = 1) -> None:
        super().__init__(hidden=hidden, noise=noise, levels=levels)
        # 1x1 convolutions as linear maps over the channel axis (no oneDNN warm-up: fast).
        self.encode = nn.Linear(3, hidden)
        self.decode = nn.Linear(hidden, 3)
        self.register_buffer("offset", torch.zeros(()))

    @classmethod
    def defaults_for(cls, category: str) -> dict[str, Any]:
        """One more hidden channel for textures, to test the per-category lookup."""
        return {"hidden": 3} if category == "brick" else {}

    def size_multiple(self) -> int:
        return 2 ** (self.config["levels"] - 1)

    def optimizer_settings(self) -> OptimizerSettings:
        return OptimizerSettings(lr=1e-2, betas=(0.9, 0.99), clip_grad_norm=1.0)

    def _reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images.movedim(1, -1))).movedim(-1, 1)

    def _errors(self, images: Tensor) -> Tensor:
        return (self._reconstruct(images) - images).square().mean(1, keepdim=True)

    def loss(self, images: Tensor) -> Tensor:
        noisy = images + self.config["noise"] * torch.randn_like(images)
        return F.mse_loss(self._reconstruct(noisy), images)

    @torch.no_grad()
    def fit_normal(self, batches: Iterable[Tensor]) -> None:
        self.offset.copy_(torch.cat([self._errors(b).flatten() for b in batches]).mean())

    def anomaly_map(self, images: Tensor) -> Tensor:
        return self._errors(images) - self.offset


def raise_in_loss_at(monkeypatch: Any, call: int, error: BaseException) -> None:
    """Make the tiny model's ``loss`` raise ``error`` on its ``call``-th call (1-based), through
    ``monkeypatch`` (a ``pytest.MonkeyPatch``, undone with it)."""
    calls = {"count": 0}
    original = TinyAutoencoder.loss

    def loss(self: TinyAutoencoder, images: Tensor) -> Tensor:
        calls["count"] += 1
        if calls["count"] == call:
            raise error
        return original(self, images)

    monkeypatch.setattr(TinyAutoencoder, "loss", loss)
