"""Where a process stands in a torchrun job, and the random streams that make every rank's
draws, and a resumed run's, what an uninterrupted run's would be."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    """Where this process stands in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    size: int = 1  # processes in the job (torchrun's WORLD_SIZE)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return Dist()
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), size)


def step_seed(seed: int, step: int, rank: int, stream: int = 0) -> int:
    """A distinct seed for each (run seed, step, rank, stream): stream 0 trains, 1 evaluates."""
    return ((seed * 1_000_003 + step) * 1024 + rank) * 2 + stream


def ranks_out_of_sync(model, device) -> int:
    """How many parameter tensors differ from rank 0's (DistributedDataParallel keeps this at 0)."""
    differ = 0
    for p in model.parameters():
        reference = p.detach().clone()
        dist.broadcast(reference, src=0)
        differ += int(not torch.equal(reference, p.detach()))
    t = torch.tensor([differ], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
