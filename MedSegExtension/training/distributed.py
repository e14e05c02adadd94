"""Multi-GPU training with PyTorch DDP under ``torchrun``: process group and collective decisions.

``torchrun --nproc_per_node 4 -m MedSegExtension train config.yaml`` starts four processes;
each reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, trains on its own
GPU on its own patches (seeded by rank), and DDP averages the gradients. Rank 0 alone
validates, writes checkpoints and the model folder. NCCL is used on CUDA, gloo on the CPU.
The local launcher for CPU checks of this code path is :mod:`.launch` (it sits above the
trainer; this module imports nothing from training).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """What ``torchrun`` (or :func:`~.launch.launch_local`) put in the environment; one process when nothing."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0"))))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched with several processes (no-op for one)."""
    info = from_environment()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    # Validation runs on rank 0 while the others wait in a collective: allow it time.
    dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return info


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def any_true(flags: list[bool], info: DistInfo, device: torch.device) -> list[bool]:
    """Element-wise OR of boolean flags across ranks, so every rank takes the same decision."""
    if not info.enabled:
        return flags
    tensor = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return [bool(v) for v in tensor.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
