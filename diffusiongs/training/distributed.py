"""Process-group setup for single-process and ``torchrun`` runs (DDP)."""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun (RANK/WORLD_SIZE set), else run alone.

    ``device``: ``auto`` (CUDA when available), ``cpu`` or ``cuda``. NCCL on CUDA, gloo on CPU.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup_distributed(info: DistInfo) -> None:
    """Leave the process group.

    A DDP wrapper sits in reference cycles (a weak reference to it outlives ``del``), so without a collection it,
    and the group it holds, would live on until interpreter shutdown; collecting first ends them here, in order.
    """
    if info.enabled and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, torch.Tensor], info: DistInfo) -> dict[str, torch.Tensor]:
    """Average logged scalars over ranks (only called at logging steps)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    stacked = torch.stack([values[k].float() for k in keys])
    dist.all_reduce(stacked)
    stacked /= info.world_size
    return dict(zip(keys, stacked))
