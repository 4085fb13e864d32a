"""Data-parallel training of the generators with ``torch.distributed`` (DDP).

Launch any training with ``torchrun`` (``python -m agents.train`` is one)::

    torchrun --nproc_per_node 2 -m agents.train goalrank --out runs/goalrank.pt

:func:`data_parallel` reads torchrun's ``RANK`` / ``WORLD_SIZE`` and starts the
process group (gloo on CPU, nccl on CUDA, each rank on its own GPU); without them it
is one process and nothing changes. How a trainer uses it (GoalRank's loop):

* every rank draws the same global batch from the same seeds and does the batch's
  work without gradients in full (sampling the groups, scoring them): cheap next to
  the gradient pass, and it keeps every random stream identical to one process's;
* the gradient pass is split: rank ``r`` takes its contiguous share of the requests
  (:meth:`DataParallel.shard`) and :class:`~torch.nn.parallel.DistributedDataParallel`
  averages the gradients, so with equal shares one step equals one process's step
  at the same global batch up to the order of float sums;
* the logged numbers are averaged over the ranks (:meth:`DataParallel.mean`), and
  rank 0 alone writes logs and checkpoints (:attr:`DataParallel.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from simulators.data.errors import ConfigError


class _Method(nn.Module):
    """``forward`` = a method of ``module``: DDP synchronises gradients of forwards only."""

    def __init__(self, module: nn.Module, method: str) -> None:
        super().__init__()
        self.module = module
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, self.method)(*args, **kwargs)


@dataclass(frozen=True)
class DataParallel:
    """This process's place among the training processes.

    Attributes:
        rank: This process's index (0 writes logs and checkpoints).
        world_size: Processes training together (1: no distribution).
    """

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints."""
        return self.rank == 0

    def shard(self, count: int, *, even: bool = True) -> slice:
        """This rank's contiguous share of ``count`` rows.

        ``even``: equal shares or an error (a loss that averages its rows weighs
        unequal shares unequally). ``even=False``: shares differing by at most one
        row, for losses normalised by the whole batch (DeGRe's weighted sum).
        """
        if count < self.world_size or (even and count % self.world_size):
            need = "a multiple of" if even else "at least"
            raise ConfigError(
                f"a batch of {count} rows does not split over {self.world_size} processes "
                f"(each needs {'an equal share' if even else 'a row'}): make the batch size "
                f"{need} {self.world_size}"
            )
        bounds = np.linspace(0, count, self.world_size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def share_weight(self, share: int, count: int) -> float:
        """``world_size * share / count``: the factor for a mean over this rank's rows.

        A mean over this rank's ``share`` rows times it, averaged over the ranks by
        DDP, is the mean over all ``count`` rows (exact for unequal shares too).
        """
        return self.world_size * share / count

    def wrap(
        self, module: nn.Module, method: str = "forward", *, find_unused: bool = False
    ) -> nn.Module:
        """``module.method`` as a module whose gradients are averaged over the ranks.

        ``find_unused``: some parameters may get no gradient in a step (a value head
        that a loss leaves out); DDP then looks for them after each backward.
        """
        called = module if method == "forward" else _Method(module, method)
        if self.world_size == 1:
            return called
        # Parameters start equal on every rank (DDP broadcasts rank 0's anyway).
        return nn.parallel.DistributedDataParallel(called, find_unused_parameters=find_unused)

    def mean(self, value: float) -> float:
        """``value`` averaged over the ranks (for the logs: one process's numbers)."""
        if self.world_size == 1:
            return value
        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.item() / self.world_size


def data_parallel(device: torch.device | str = "cpu") -> DataParallel:
    """This process's :class:`DataParallel`, starting the process group if torchrun asks.

    ``WORLD_SIZE`` > 1 (set by ``torchrun``) joins the group: gloo for CPU devices,
    nccl for CUDA (``LOCAL_RANK`` picks the GPU). Otherwise a single process.

    Raises:
        ConfigError: A CUDA device without as many GPUs as local ranks.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DataParallel()
    if not dist.is_initialized():
        cuda = torch.device(device).type == "cuda"
        if cuda:
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if local_rank >= torch.cuda.device_count():
                raise ConfigError(
                    f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                    "run at most one process per GPU (torchrun --nproc_per_node)"
                )
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return DataParallel(rank=dist.get_rank(), world_size=dist.get_world_size())
