"""Which slices to annotate next: those where the model is least sure."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .annotations import VOXEL_AXES, SliceRef


def structure_region(labels: np.ndarray, margin: int = 5) -> np.ndarray:
    """The bounding box of all non-zero labels, grown by ``margin`` voxels, as a bool mask."""
    region = np.zeros(labels.shape, dtype=bool)
    present = np.argwhere(labels > 0)
    if len(present) == 0:
        return ~region
    low = np.maximum(present.min(axis=0) - margin, 0)
    high = present.max(axis=0) + 1 + margin
    region[tuple(slice(int(a), int(b)) for a, b in zip(low, high))] = True
    return region


def suggest_slices(
    uncertainty: np.ndarray,
    annotated: Iterable[SliceRef] = (),
    count: int = 3,
    axes: Iterable[str] = VOXEL_AXES,
    min_gap: int = 3,
    region: np.ndarray | None = None,
) -> dict[str, list[tuple[int, float]]]:
    """Per voxel axis, up to ``count`` slices ranked by total uncertainty, with their scores.

    ``uncertainty`` is (k, j, i) in [0, 1]. A slice's score is the sum of its voxels'
    uncertainty (a slice through much doubtful tissue beats one through a little), normalized
    by the largest slice sum on that axis. Annotated slices, and slices within ``min_gap`` of
    an annotated or already-suggested one, are skipped so suggestions spread out. ``region``
    (bool, same shape) limits the count to where the structures are, so doubt about empty
    background far away does not attract suggestions.
    """
    if region is not None:
        uncertainty = np.where(region, uncertainty, 0.0)
    taken = {axis: {ref.index for ref in annotated if ref.axis == axis} for axis in VOXEL_AXES}
    suggestions: dict[str, list[tuple[int, float]]] = {}
    for axis in axes:
        array_axis = 2 - VOXEL_AXES.index(axis)
        others = tuple(a for a in range(3) if a != array_axis)
        scores = uncertainty.sum(axis=others).astype(np.float64)
        if scores.max() > 0:
            scores /= scores.max()
        blocked = set()
        for index in taken[axis]:
            blocked.update(range(index - min_gap + 1, index + min_gap))
        chosen: list[tuple[int, float]] = []
        for index in np.argsort(-scores, kind="stable"):
            if len(chosen) == count or scores[index] <= 0:
                break
            if int(index) in blocked:
                continue
            chosen.append((int(index), float(scores[index])))
            blocked.update(range(int(index) - min_gap + 1, int(index) + min_gap))
        suggestions[axis] = chosen
    return suggestions
