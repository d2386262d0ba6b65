"""Data-parallel training of the drafter modules over several processes (one per GPU).

``evspec train`` launched by ``torchrun --nproc-per-node N -m evspec train ...`` finds the
process group in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, set by torchrun)
and trains as N replicas: rank r takes every N-th batch of the shared shuffled stream
(starting at batch r), gradients are averaged over the ranks after each backward pass (so
every replica takes the same optimiser step and the weights stay identical), a time
budget stops every rank at the same step, and only rank 0 evaluates and writes
checkpoints.  A step thus sees N batches: N times the examples of a single process.

Without those variables (a plain ``python -m evspec train``) :meth:`DataParallel.from_env`
returns a single-process stand-in whose methods do nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun, ``cuda`` without an index is this process's GPU (``LOCAL_RANK``);
    anything else is returned as it is."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if several and device.type == "cuda" and device.index is None:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def is_main_process() -> bool:
    """Rank 0 under torchrun, or a single process."""
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DataParallel:
    """The process group of one data-parallel run (``world_size`` 1: none)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @classmethod
    def from_env(cls, device: torch.device) -> DataParallel:
        """Join the group torchrun describes in the environment (NCCL on CUDA, gloo on the
        CPU); a single process when ``WORLD_SIZE`` is unset or 1."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        owns = False
        if not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(local)
            dist.init_process_group(backend, rank=rank, world_size=world)
            owns = True
        return cls(rank, world, local, owns)

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """``device`` for this rank: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
        return rank_device(device) if self.active else device

    def shard(self, stream: Iterable[Any]) -> Iterator[Any]:
        """This rank's batches: every ``world_size``-th of ``stream`` from batch ``rank``."""
        for i, batch in enumerate(stream):
            if i % self.world_size == self.rank:
                yield batch

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the ranks (one flat all-reduce)."""
        if not self.active:
            return
        for p in params:  # a parameter unused by this rank's batch still joins the sum
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])  # [sum of numels]
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def max(self, value: float, device: torch.device) -> float:
        """The largest ``value`` over the ranks, on every rank (e.g. the fraction of a time
        budget spent, so that all ranks use one learning rate and stop at one step)."""
        if not self.active:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def close(self) -> None:
        """Leave the group this object joined."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False
