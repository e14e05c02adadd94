"""Region growing from the annotated voxels: a seeded shortest-path competition (GrowCut-like).

Every annotated voxel is a seed of its label (background included). Each other voxel takes the
label of the seed it reaches most cheaply, where a step between 6-neighbours costs the intensity
difference (in units of the region's robust intensity range); a tiny length term breaks ties
(on dev tasks any larger one lost Dice: benchmarks/sparse/dev_candidates.py). This is
the fast GrowCut formulation (a shortest-path forest, as Slicer's Grow from seeds computes it),
solved here with SciPy's Dijkstra. Each voxel's path to its seed stays inside its own label, so
every grown piece touches the user's voxels of that label.

It works on the bounding box of the classes' grown boxes (``priors.class_boxes``): outside it
is background. Large regions are grown on a grid coarsened by a whole factor per axis, then
taken back to full resolution by nearest neighbour; the annotated voxels keep their labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra

from .annotations import SparseAnnotation
from .priors import class_boxes

LENGTH_COST = 1e-4  # cost of one mm of path, against 1.0 for the whole robust intensity range (breaks ties)
MAX_VOXELS = 3_000_000  # above this the region is grown on a coarser grid


def growing_region(annotation: SparseAnnotation) -> tuple[slice, ...]:
    """The (k, j, i) box that holds every class's grown box."""
    boxes = class_boxes(annotation.labels, annotation.known, annotation.classes).values()
    low = np.min([[b.start for b in box] for box in boxes], axis=0)
    high = np.max([[b.stop for b in box] for box in boxes], axis=0)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _edges(shape: tuple[int, ...], image: np.ndarray, spacing_kji: Sequence[float], scale: float):
    """Undirected 6-neighbour edges (rows, columns, costs) of a (k, j, i) grid."""
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    rows, cols, costs = [], [], []
    for axis in range(3):
        if shape[axis] < 2:
            continue
        ahead = [slice(None)] * 3
        behind = [slice(None)] * 3
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        rows.append(index[tuple(behind)].ravel())
        cols.append(index[tuple(ahead)].ravel())
        step = np.abs(image[tuple(ahead)] - image[tuple(behind)]).ravel() / scale
        costs.append(step + LENGTH_COST * float(spacing_kji[axis]))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(costs)


def grow_labels(image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float]) -> np.ndarray:
    """Dense (k, j, i) labels grown from ``annotation`` over ``image`` (k, j, i): background outside the region."""
    region = growing_region(annotation)
    crop = image[region].astype(np.float32)
    labels = annotation.labels[region]
    known = annotation.known[region]
    factors = _coarsening(crop.shape)
    spacing_kji = np.array(spacing_ijk[::-1], dtype=float) * factors
    if any(f > 1 for f in factors):
        small, small_labels, small_known = _coarsened(crop, labels, known, factors)
    else:
        small, small_labels, small_known = crop, labels, known
    grown = _grow(small, small_labels, small_known, spacing_kji)
    if any(f > 1 for f in factors):
        for axis, factor in enumerate(factors):
            grown = np.repeat(grown, factor, axis=axis)
        grown = grown[: crop.shape[0], : crop.shape[1], : crop.shape[2]]
    grown = np.where(known, labels, grown)
    result = np.zeros(annotation.labels.shape, dtype=annotation.labels.dtype)
    result[region] = grown
    return result


def _coarsening(shape: tuple[int, ...]) -> tuple[int, int, int]:
    factor = 1
    while np.prod([int(np.ceil(s / factor)) for s in shape]) > MAX_VOXELS:
        factor += 1
    return (factor, factor, factor)


def _coarsened(image: np.ndarray, labels: np.ndarray, known: np.ndarray, factors: Sequence[int]):
    """Block means of the image; a coarse voxel is a seed when any of its fine voxels is (its label: one of theirs)."""
    padded = [int(np.ceil(s / f)) * f for s, f in zip(image.shape, factors)]
    full = np.pad(image, [(0, p - s) for p, s in zip(padded, image.shape)], mode="edge")
    shape = [p // f for p, f in zip(padded, factors)]
    blocks = full.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2])
    small = blocks.mean(axis=(1, 3, 5))
    small_labels = np.zeros(shape, dtype=labels.dtype)
    small_known = np.zeros(shape, dtype=bool)
    where = np.argwhere(known)
    cells = tuple((where // np.asarray(factors)).T)
    # Foreground wins a coarse cell over background, so a thin structure keeps its seeds.
    order = np.argsort(labels[known] != 0, kind="stable")
    small_labels[tuple(c[order] for c in cells)] = labels[known][order]
    small_known[cells] = True
    return small, small_labels, small_known


def _grow(image: np.ndarray, labels: np.ndarray, known: np.ndarray, spacing_kji: Sequence[float]) -> np.ndarray:
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    scale = max(float(high - low), 1e-6)
    rows, cols, costs = _edges(image.shape, image, spacing_kji, scale)
    size = image.size
    graph = coo_matrix((costs, (rows, cols)), shape=(size, size)).tocsr()
    seeds = np.flatnonzero(known.ravel())
    if seeds.size == 0:
        return np.zeros(image.shape, dtype=labels.dtype)
    _, _, sources = dijkstra(graph, directed=False, indices=seeds, return_predecessors=True, min_only=True)
    flat = labels.ravel()
    grown = np.zeros(size, dtype=labels.dtype)
    reached = sources >= 0
    grown[reached] = flat[sources[reached]]
    return grown.reshape(image.shape)
