"""Multi-GPU training with PyTorch DDP under ``torchrun``, and a local launcher for CPU checks.

``torchrun --nproc_per_node 4 -m MedSegExtension train config.yaml`` starts four processes;
each reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` from the environment, trains on its own
GPU on its own patches (seeded by rank), and DDP averages the gradients. Rank 0 alone
validates, writes checkpoints and the model folder. NCCL is used on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
import socket
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

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
    """What ``torchrun`` (or :func:`launch_local`) put in the environment; one process when nothing."""
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


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, config: Any, kwargs: dict[str, Any], queue: Any,
                  threads: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(threads)
    from .trainer import train

    try:
        card = train(config, **kwargs)
        queue.put((rank, "ok", card.to_dict() if rank == 0 else None, str(card.folder) if rank == 0 else None))
    except BaseException as exc:  # report to the parent, then fail this process
        queue.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", None))
        raise


def launch_local(config: Any, nprocs: int = 2, threads: int = 1, **kwargs: Any) -> tuple[dict[str, Any], list[int]]:
    """Run :func:`~MedSegExtension.training.trainer.train` in ``nprocs`` local processes (gloo on CPU).

    For tests and quick checks of the DDP code path without ``torchrun``; ``config`` must be
    picklable (a path or a dict). Returns rank 0's card as a dict (``folder`` added) and the
    ranks that finished.
    """
    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    port = free_port()
    mp.start_processes(_local_worker, args=(nprocs, port, config, kwargs, queue, threads), nprocs=nprocs,
                       join=True, start_method="spawn")
    finished, card = [], None
    while not queue.empty():
        rank, status, payload, folder = queue.get()
        if status != "ok":
            raise RuntimeError(f"rank {rank} failed: {payload}")
        finished.append(rank)
        if rank == 0:
            card = dict(payload, folder=folder)
    if card is None:
        raise RuntimeError("rank 0 did not report a model")
    return card, sorted(finished)
