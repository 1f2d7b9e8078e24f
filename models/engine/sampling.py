"""The order and augmentation of training images: functions of the seed, the epoch and the
image index only, so a resumed or distributed run draws what an uninterrupted single process
draws.

Why a resumed run equals an uninterrupted one (bit for bit on the CPU): an epoch's data order
is a function of the seed and the epoch only; texture augmentation draws from a generator of
``(seed, epoch, image index)``, so it does not matter which process, worker or step loads an
image; everything else random draws from the global generators, whose states every
checkpoint holds.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from ..data import Item, TextureAugment
from .distributed import Distributed, per_process_batch

__all__ = ["TrainingImages", "epoch_generator", "epoch_loader", "mixed_seed", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's global generator and ``random``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def mixed_seed(*keys: int) -> int:
    """A 62-bit seed mixed from ``keys``: nearby keys give unrelated seeds."""
    state = np.random.SeedSequence(list(keys)).generate_state(1, dtype=np.uint64)[0]
    return int(state) >> 2


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of an epoch's data loader: a function of the seed and the epoch only, so
    a resumed run draws the same as an uninterrupted one."""
    return torch.Generator().manual_seed(mixed_seed(seed, epoch))


class TrainingImages(Dataset[Item]):
    """The training images, indexed by ``(epoch, index)``.

    Texture augmentation (when on) draws from a generator of ``(seed, epoch, index)``: an
    image is augmented the same way whichever process, worker or step loads it.

    Args:
        images: the plain training images.
        seed: the run's seed.
        augment: flip and rotate (texture categories).
    """

    def __init__(self, images: Dataset[Item], seed: int, augment: bool) -> None:
        self.images, self.seed, self.augment = images, seed, augment

    def __len__(self) -> int:
        return len(self.images)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Item:
        epoch, index = key
        item = self.images[index]
        if not self.augment:
            return item
        generator = torch.Generator().manual_seed(mixed_seed(self.seed, epoch, index))
        image, mask = TextureAugment(generator)(item.image, item.mask)
        return item._replace(image=image, mask=mask)


def epoch_loader(images: TrainingImages, batch_size: int, seed: int, epoch: int,
                 skip_steps: int, distributed: Distributed, workers: int) -> DataLoader[Item]:
    """This process's batches of an epoch, after the first ``skip_steps`` (never loaded).

    ``DistributedSampler`` shuffles by the seed and the epoch, drops the tail that fills no
    global batch, and gives process ``r`` of ``n`` every n-th image from the r-th: the
    processes' batches of a step together are the batch one process takes with the same
    global batch. Alone it is a plain seeded shuffle.

    Args:
        images: the training images.
        batch_size: the global batch.
        seed: the run's seed.
        epoch: the epoch (0-based).
        skip_steps: steps of this epoch already taken.
        distributed: this process's place.
        workers: data-loading worker processes.
    """
    per_process = per_process_batch(batch_size, distributed.world_size)
    sampler = DistributedSampler(images, num_replicas=distributed.world_size,
                                 rank=distributed.rank, shuffle=True,
                                 seed=mixed_seed(seed), drop_last=True)
    sampler.set_epoch(epoch)
    keys = [(epoch, index) for index in list(sampler)[skip_steps * per_process:]]
    return DataLoader(images, batch_size=per_process, sampler=keys, drop_last=True,
                      num_workers=workers, generator=epoch_generator(seed, epoch))
