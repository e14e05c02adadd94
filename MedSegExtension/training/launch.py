"""Run :func:`~.trainer.train` in several local processes (gloo on the CPU), without ``torchrun``.

For tests and quick checks of the DDP code path. Above the trainer in the import order, so that
:mod:`.distributed`, which the loop needs, never imports the trainer.
"""

from __future__ import annotations

import os
import socket
import traceback
from typing import Any

import torch

from .trainer import train


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _local_worker(rank: int, world_size: int, port: int, config: Any, kwargs: dict[str, Any], queue: Any,
                  threads: int) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(threads)
    try:
        card = train(config, **kwargs)
        queue.put((rank, "ok", card.to_dict() if rank == 0 else None, str(card.folder) if rank == 0 else None))
    except BaseException as exc:  # report to the parent, then fail this process
        queue.put((rank, "error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}", None))
        raise


def launch_local(config: Any, nprocs: int = 2, threads: int = 1, **kwargs: Any) -> tuple[dict[str, Any], list[int]]:
    """Run :func:`~.trainer.train` in ``nprocs`` local processes (gloo on CPU).

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
