"""Seeds and random-generator states of a training run, kept as tensors so checkpoints load safely.

Reproducibility: every batch is a function of (seed, rank, step) and the torch RNG is reseeded
from (seed, rank, step) before each step (:func:`step_seed`), so on the CPU a run interrupted
and resumed from a checkpoint ends with exactly the weights of an uninterrupted run. The
checkpoint also holds the global generators' states (torch, numpy, Python, CUDA) for code that
draws from them. Those states are stored as tensors, lists and numbers only: numpy's and
Python's own state objects would need pickled globals, and checkpoints are read with
``torch.load(..., weights_only=True)``, which refuses anything but plain data.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one training step of one process."""
    return int(np.random.SeedSequence([int(seed), int(rank), int(step), 0x5EED]).generate_state(1)[0])


def rng_states(device: torch.device) -> dict[str, Any]:
    """The global generators' states as tensors, lists and numbers (loadable with ``weights_only``)."""
    kind, key, position, has_gauss, cached_gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gauss)},
        "python": {"version": int(version), "state": [int(v) for v in python_state], "gauss_next": python_gauss},
    }
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def set_rng_states(states: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)
