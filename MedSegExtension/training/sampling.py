"""Patch sampling balanced between foreground and background (seed 004).

Seed 004 trained on 64³ patches drawn half around tumour and half elsewhere, because the
tumour filled < 1 % of the voxels. Here a fraction ``foreground_fraction`` of the patches is
centred on a voxel of a label chosen uniformly among the labels present in the case (so a
small structure is drawn as often as a large one); the rest are centred anywhere.

Arrays are (C, k, j, i) images and (k, j, i) label maps of channel indices; sizes here are in
array order (k, j, i).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def class_locations(labels: np.ndarray, max_per_class: int = 20000, seed: int = 0) -> dict[int, np.ndarray]:
    """For each non-zero value of ``labels``, up to ``max_per_class`` voxel coordinates (N, 3).

    Large structures are subsampled (deterministically) to bound memory; a patch centre only
    needs to hit the structure, not enumerate it.
    """
    rng = np.random.default_rng(seed)
    flat = labels.ravel()
    result: dict[int, np.ndarray] = {}
    foreground = np.flatnonzero(flat)  # usually a small part of the volume: sort only that
    order = foreground[np.argsort(flat[foreground], kind="stable")]
    values, starts = np.unique(flat[order], return_index=True)
    ends = list(starts[1:]) + [order.size]
    for value, start, end in zip(values, starts, ends, strict=False):
        indices = order[start:end]
        if indices.size > max_per_class:
            indices = np.sort(rng.choice(indices, max_per_class, replace=False))
        result[int(value)] = np.stack(np.unravel_index(indices, labels.shape), axis=1).astype(np.int32)
    return result


@dataclass
class PatchSampler:
    """Chooses patch centres: ``foreground_fraction`` of them on a labelled voxel."""

    foreground_fraction: float = 0.5

    def centre(
        self, shape: Sequence[int], locations: dict[int, np.ndarray], rng: np.random.Generator
    ) -> tuple[int, int, int]:
        """A centre voxel in a volume of ``shape`` (k, j, i), given the case's class locations."""
        present = [value for value, coords in locations.items() if len(coords)]
        if present and rng.random() < self.foreground_fraction:
            value = present[int(rng.integers(len(present)))]
            coords = locations[value]
            k, j, i = coords[int(rng.integers(len(coords)))]
            return int(k), int(j), int(i)
        return tuple(int(rng.integers(n)) for n in shape[-3:])  # type: ignore[return-value]


def crop(array: np.ndarray, centre: Sequence[int], size: Sequence[int], pad_value: float = 0) -> np.ndarray:
    """The ``size`` (k, j, i) box of ``array`` (``(..., k, j, i)``) centred on ``centre``, padded outside.

    The box starts at ``centre - size // 2``, so a centre of ``n // 2`` keeps an even-sized
    volume exactly in place.
    """
    spatial = array.shape[-3:]
    out = np.full(array.shape[:-3] + tuple(size), pad_value, dtype=array.dtype)
    source, target = [], []
    for c, s, n in zip(centre, size, spatial, strict=False):
        start = int(c) - int(s) // 2
        lo, hi = max(start, 0), min(start + int(s), n)
        if hi <= lo:
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - start, hi - start))
    out[(..., *target)] = array[(..., *source)]
    return out


def valid_mask(shape: Sequence[int], centre: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """1.0 where the ``size`` box around ``centre`` lies inside a volume of ``shape``, else 0.0."""
    return crop(np.ones(tuple(shape[-3:]), dtype=np.float32), centre, size, 0.0)
