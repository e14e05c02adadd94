"""Which slices a simulated annotator labels, chosen from the full reference label map.

Protocols (per structure):

- ``parallel-N`` (N = 1, 3, 5, 10): N axial slices spread evenly over the structure's extent, at
  the interior fractions ``(m + 1) / (N + 1)`` (1 slice: the middle; 3: the quartiles).
- ``ortho-N`` (N = 1, 3): N slices on each of the three voxel axes, placed the same way
  (1 + 1 + 1 through the centre of the structure's bounding box, 3 + 3 + 3 through its quartiles).

A chosen position that misses the structure (a curved one) moves to the nearest slice that holds
it; collisions move to the nearest free slice, so a structure gets N distinct slices when its
extent allows.

Multi-structure tasks: slices are chosen structure by structure and merged into one annotation
per protocol. A structure's slice that lands within ``snap`` voxels of a slice already chosen on
the same axis (and crossing this structure) reuses it: fewer slices to draw, and no two annotated
slices side by side, which Fill between slices could not interpolate from. Every merged slice is
complete: all structures in it are labelled, the rest is background. So a structure may be
crossed by more slices than its own N; :func:`slices_crossing` counts them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef, SparseAnnotation, from_slices, plane_axis


@dataclass(frozen=True)
class Protocol:
    name: str
    kind: str  # "parallel" or "orthogonal"
    per_axis: int  # slices per structure on each axis used

    @property
    def slices_per_structure(self) -> int:
        return self.per_axis * (3 if self.kind == "orthogonal" else 1)


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol("parallel-1", "parallel", 1),
        Protocol("parallel-3", "parallel", 3),
        Protocol("parallel-5", "parallel", 5),
        Protocol("parallel-10", "parallel", 10),
        Protocol("ortho-1", "orthogonal", 1),
        Protocol("ortho-3", "orthogonal", 3),
    )
}


def _occupied(mask: np.ndarray, axis: str) -> np.ndarray:
    """Indices along voxel ``axis`` of the slices that hold part of ``mask`` (k, j, i)."""
    array_axis = 2 - VOXEL_AXES.index(axis)
    return np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != array_axis)))


def spread_slices(mask: np.ndarray, count: int, axis: str) -> list[SliceRef]:
    """``count`` distinct slices on ``axis`` spread over the structure ``mask`` (k, j, i bool); fewer if it is thinner."""
    occupied = _occupied(mask, axis)
    if occupied.size == 0:
        raise ValueError("empty structure: no slice to choose")
    low, high = int(occupied[0]), int(occupied[-1])
    chosen: list[int] = []
    for m in range(min(count, occupied.size)):
        target = low + (high - low) * (m + 1) / (count + 1)
        free = occupied[~np.isin(occupied, chosen)]
        chosen.append(int(free[np.argmin(np.abs(free - target))]))
    return [SliceRef(axis, index) for index in sorted(chosen)]


def structure_slices(mask: np.ndarray, protocol: Protocol, parallel_axis: str = "k") -> list[SliceRef]:
    """One structure's slices under ``protocol``; ``parallel_axis`` is the voxel axis of parallel slices."""
    if protocol.kind == "parallel":
        return spread_slices(mask, protocol.per_axis, parallel_axis)
    if protocol.kind == "orthogonal":
        return [ref for axis in VOXEL_AXES for ref in spread_slices(mask, protocol.per_axis, axis)]
    raise ValueError(f"protocol {protocol.name}: unknown kind {protocol.kind!r}")


def merge_slices(per_structure: Sequence[tuple[np.ndarray, Sequence[SliceRef]]], snap: int = 2) -> list[SliceRef]:
    """Merge structures' slices; a slice within ``snap`` of a kept one on its axis that crosses the structure reuses it."""
    merged: list[SliceRef] = []
    for mask, refs in per_structure:
        used: set[SliceRef] = set()
        for ref in refs:
            crossing = set(_occupied(mask, ref.axis).tolist())
            near = [
                kept for kept in merged
                if kept.axis == ref.axis and abs(kept.index - ref.index) <= snap
                and kept.index in crossing and kept not in used
            ]
            pick = min(near, key=lambda kept: abs(kept.index - ref.index)) if near else ref
            used.add(pick)
            if pick not in merged:
                merged.append(pick)
    return sorted(merged, key=lambda ref: (VOXEL_AXES.index(ref.axis), ref.index))


def slices_crossing(mask: np.ndarray, slices: Iterable[SliceRef]) -> int:
    """How many of ``slices`` cut through the structure ``mask``."""
    return sum(1 for ref in slices if ref.index in set(_occupied(mask, ref.axis).tolist()))


def choose_slices(
    image: sitk.Image, reference: sitk.Image, values: Iterable[int], protocol: Protocol, snap: int = 2
) -> list[SliceRef]:
    """The merged slices of ``protocol`` for the structures ``values`` of ``reference``; parallel ones are axial."""
    labels = sitk.GetArrayViewFromImage(reference)
    axial = plane_axis(image, "axial")
    per_structure = []
    for value in values:
        mask = labels == value
        per_structure.append((mask, structure_slices(mask, protocol, axial)))
    return merge_slices(per_structure, snap)


def sparse_annotation(image: sitk.Image, reference: sitk.Image, slices: Sequence[SliceRef]) -> SparseAnnotation:
    """The engine's complete-slice annotation of ``reference`` on ``slices``."""
    return from_slices(image, reference, slices, labels_name="reference")
