"""Training checkpoints: ``last.pt`` (everything to resume) and ``best.pt`` (the best weights).

A checkpoint is read with ``torch.load(..., weights_only=True)``: it may hold only tensors and
plain dicts, lists, tuples, numbers, strings and None, so a planted or tampered file can never
run code (``medseg train --resume`` reads whatever ``last.pt`` lies in the checkpoint folder).
Everything the loop saves is kept to that vocabulary (RNG states: :mod:`.rng`). A file that
holds anything else is refused with one line; nothing from it is executed. Writes are atomic
(:func:`~MedSegExtension.io.atomic.atomic_output`), so an interrupted save leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError, first_line
from ..io.atomic import atomic_output

CHECKPOINT_FORMAT = 2  # 2: RNG states as tensors and lists (format 1 held numpy objects)
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"


def write_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save ``state`` (plain data and tensors) atomically to ``path``."""
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A MedSeg checkpoint's contents, loaded without running code; InputError (one line) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{path}: refused to load: it holds Python objects, not only tensors and plain data "
                         f"(not a MedSeg checkpoint, or tampered with); nothing in it was run; delete it or "
                         f"use --restart") from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise InputError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else None
        raise InputError(f"{path}: not a MedSeg training checkpoint of format {CHECKPOINT_FORMAT}"
                         + (f" (format {found}: made by an older MedSeg; use --restart)" if found is not None else ""))
    return state


