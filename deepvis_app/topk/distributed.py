"""Ranks of a pass run under torchrun (scan, embed): who am I, which device, and the two collectives they use.

The passes exchange only small Python objects (partial top-k states, counts) and wait for each other, so the
process group is always gloo, also with GPUs: NCCL would add nothing there and refuses two ranks on one GPU
("Duplicate GPU detected"), which a machine with more processes than GPUs needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

# Ranks wait at the merge while others finish their shard or their crops.
GROUP_TIMEOUT = timedelta(hours=6)


@dataclass
class Dist:
    """This process's place among the ranks (a single process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    initialized_here: bool = False

    @property
    def on(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.on:
            torch.distributed.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects; the group is gloo, so no device copies)."""
        if not self.on:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.initialized_here and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(device_spec: str) -> tuple[Dist, str]:
    """Join the torchrun process group when launched by torchrun; returns the rank info and device to use.

    GPUs: one per local rank (`cuda:LOCAL_RANK % GPUs`, so more processes than GPUs share them). CPU processes:
    the CPU threads are split among them. The group is gloo either way (see the module docstring).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device_spec
    import torch.distributed as dist

    from ..devices import resolve_device

    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if resolve_device(device_spec).type == "cuda":  # also rejects cuda on a machine without it
        device_spec = f"cuda:{local_rank % torch.cuda.device_count()}"
        torch.cuda.set_device(torch.device(device_spec))
    else:
        device_spec = "cpu"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    here = not dist.is_initialized()
    if here:
        dist.init_process_group(backend="gloo", timeout=GROUP_TIMEOUT)
    return Dist(rank, world, local_rank, local_world, here), device_spec
