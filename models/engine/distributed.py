"""Training on several processes (``torchrun``) with DistributedDataParallel.

``torchrun --nproc_per_node N -m flowkit train ...`` starts N processes and sets ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE`` and the rendezvous address in their environment;
:func:`distributed_session` joins them into one process group (NCCL on GPUs, gloo on the CPU)
and leaves it on exit. Without those variables it is a single process and nothing changes.

The rules of a distributed run:

- ``--batch-size`` is the global batch: each process takes ``batch_size / world_size`` images
  of every global batch (:func:`per_process_batch`), and DDP averages the gradients, so for a
  loss that is a mean over the images of a batch every step equals one process's step with
  the same global batch (up to floating-point rounding).
- Every process seeds the same generators: random draws inside the model (noise, dropout)
  are the same on every process, for its own images. Data augmentation is drawn per image
  from ``(seed, epoch, index)``, the same whichever process loads the image.
- Only rank 0 writes (run folder, logs, checkpoints, metrics) and shows progress bars; every
  process loads the checkpoint to resume, and rank 0 alone fits, evaluates and reports the
  final model.
- Models in :data:`BATCH_COUPLED_MODELS` have a loss that pairs the images of a batch
  (PyramidFlow's pairwise Fourier loss and batch volume normalization): there each process
  couples only its own ``batch_size / world_size`` images, so the result is that of a
  different (per-process) batch, not of one process with the global batch.
"""

from __future__ import annotations

import importlib
import os
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError

__all__ = [
    "BATCH_COUPLED_MODELS",
    "Distributed",
    "distributed_session",
    "per_process_batch",
    "world_size_from_environment",
]

BATCH_COUPLED_MODELS = frozenset({"pyramidflow"})
"""Registry names of models whose training loss couples the images of a batch."""

_MAIN_RANK = 0


@dataclass(frozen=True)
class Distributed:
    """Where this process stands in a distributed run (``world_size == 1``: alone).

    Attributes:
        rank: this process's index, 0 to ``world_size - 1``.
        world_size: the number of processes.
        local_rank: the index on this machine (the GPU it uses).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    _wrapped: list[weakref.ref[DistributedDataParallel]] = field(
        default_factory=list, init=False, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and reports (rank 0)."""
        return self.rank == _MAIN_RANK

    @property
    def is_distributed(self) -> bool:
        """Whether there are other processes to talk to."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait until every process gets here (no-op alone)."""
        if self.is_distributed:
            dist.barrier()

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """``module`` in DistributedDataParallel (alone: ``module`` itself).

        DDP broadcasts rank 0's parameters and buffers when it wraps, so every process starts
        from the same weights.
        """
        if not self.is_distributed:
            return module
        device_ids = [device.index] if device.type == "cuda" else None
        wrapped = DistributedDataParallel(module, device_ids=device_ids)
        self._wrapped.append(weakref.ref(wrapped))
        return wrapped

    def _detach_wrappers(self) -> None:
        """Drop what the DDP modules :meth:`wrap` made hold of the process group.

        A DDP module can outlive the session (a caller's local, the frames of an exception's
        traceback). If its reducer held the last reference to the group, the group would be
        freed later, by whoever drops the module, with the GIL held: gloo's destructor then
        waits for its worker threads while one of them waits for the GIL to release a
        finished collective's tensors, a deadlock. Detached here, the group's last reference
        is ``destroy_process_group``'s, whose destructor releases the GIL.
        """
        for reference in self._wrapped:
            module = reference()
            if module is not None:
                for name in ("reducer", "logger", "process_group"):
                    vars(module).pop(name, None)
        self._wrapped.clear()

    def broadcast_state(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process.

        Called once after the first step: a data-dependent initialization (ActNorm) sees
        different images in each process, and DDP keeps parameters in step only by averaging
        gradients, never by copying them again.
        """
        if self.is_distributed:
            with torch.no_grad():
                for tensor in (*module.parameters(), *module.buffers()):
                    dist.broadcast(tensor, _MAIN_RANK)

    def reduce_step(self, loss: Tensor, stop: bool) -> tuple[float, bool]:
        """The step's loss averaged over the processes, and whether any process must stop.

        One all-reduce per step: every process then sees the same loss (so a NaN stops all of
        them at the same step) and the same stop decision (so a signal that reached one
        process stops them all after the same step).

        Args:
            loss: this process's scalar loss.
            stop: whether this process received a stop signal.

        Returns:
            ``(mean loss, any stop)``.
        """
        if not self.is_distributed:
            return float(loss.detach()), stop
        values = torch.stack([loss.detach().float(), loss.new_tensor(float(stop))])
        dist.all_reduce(values)
        total, stops = values.tolist()
        return total / self.world_size, stops > 0


def world_size_from_environment() -> int:
    """The ``WORLD_SIZE`` torchrun set, 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_process_batch(batch_size: int, world_size: int) -> int:
    """The images each process takes of a global batch.

    Raises:
        ConfigError: ``batch_size`` does not split evenly over the processes.

    Example:
        >>> per_process_batch(8, 2)
        4
    """
    if batch_size % world_size:
        lower = max(world_size, batch_size - batch_size % world_size)
        raise ConfigError(
            f"--batch-size {batch_size} (the global batch) does not split over "
            f"{world_size} processes; use {lower} or {lower + world_size}"
        )
    return batch_size // world_size


@contextmanager
def distributed_session(device: torch.device) -> Iterator[tuple[Distributed, torch.device]]:
    """Join the process group torchrun set up, and leave it on exit.

    Leaving destroys the group and joins its threads before the ``with`` block ends, also
    when the block raises, provided nothing else still holds the group: the DDP modules
    :meth:`Distributed.wrap` made are detached from it first (and are unusable after); a DDP
    module made otherwise would hold it.

    Args:
        device: the device asked for; a CUDA device becomes ``cuda:LOCAL_RANK``.

    Yields:
        This process's place, and the device it runs on.
    """
    world_size = world_size_from_environment()
    if world_size == 1:
        yield Distributed(), device
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    _bind_world_defaults_unset()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    distributed = Distributed(dist.get_rank(), world_size, local_rank)
    try:
        yield distributed, device
    finally:
        # The group must end here, its threads joined, not whenever Python lets it go.
        distributed._detach_wrappers()
        dist.destroy_process_group()


def _bind_world_defaults_unset() -> None:
    """Import ``torch.distributed.nn.functional`` before the process group exists.

    Its functions take ``group=group.WORLD`` as a default argument, bound when the module is
    imported; DistributedDataParallel imports it lazily, after ``init_process_group``. The
    default then holds the process group for the life of the process: ``destroy_process_group``
    no longer frees it, its gloo worker threads outlive Python, and a rank that exits just
    after a collective dies with SIGABRT ("terminate called without an active exception")
    when such a thread needs the interpreter that is shutting down. Imported first, the
    defaults hold ``None``.
    """
    importlib.import_module("torch.distributed.nn.functional")
