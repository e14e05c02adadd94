"""Region growing from the annotated voxels: a seeded shortest-path competition (GrowCut-like).

Every annotated voxel is a seed of its label (background included). Each other voxel takes the
label of the seed it reaches most cheaply, where a step between neighbours costs the intensity
difference (in units of the region's robust intensity range); a tiny length term breaks ties.
This is the fast GrowCut formulation (a shortest-path forest, as Slicer's Grow from seeds computes
it), solved with SciPy's Dijkstra. Each voxel's path to its seed stays inside its own label, so
every grown piece touches the user's voxels of that label.

Two neighbourhoods, because neither wins everywhere (dev tasks, 3 slices, ``dev_candidates.py``):
26 neighbours (Slicer's) follow thin, oblique sheets (at full resolution: cortex 0.84 → 0.95 Dice, skull 0.74 → 0.91);
6 neighbours keep small deep nuclei and tracts from leaking through corners (0.70 vs 0.65). The
per-structure choice (choice.py) takes whichever predicts the held-out slice better.

It works on the bounding box of the classes' grown boxes (``priors.class_boxes``): outside it is
background. A region whose graph would not fit ``MAX_GRAPH_BYTES`` (or a quarter of the memory limit) is grown on a grid coarsened by
whole factors per axis (the finest axes first), then taken back to full resolution by nearest neighbour; the annotated
voxels keep their labels. One graph serves every seed set on the same image (``GrowingGraph``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from ..limits import GB, memory_limit_bytes
from .annotations import SparseAnnotation
from .priors import class_boxes

LENGTH_COST = 1e-4  # cost of one mm of path, against 1.0 for the whole robust intensity range (breaks ties)
MAX_GRAPH_BYTES = GB  # above this the region is grown on a coarser grid (26 neighbours: ~3 M voxels; time, not memory, sets it)
_WALL = 1e12  # intensity of the one-voxel frame around the region: no path crosses it
_BYTES_PER_EDGE = 8 + 4  # float64 cost, int32 column
_BYTES_PER_VOXEL = 48  # the framed image, one offset's differences and columns while they are computed


def _offsets(connectivity: int) -> list[tuple[int, int, int]]:
    if connectivity not in (6, 26):
        raise ValueError(f"connectivity must be 6 or 26, not {connectivity}")
    every = [o for o in itertools.product((-1, 0, 1), repeat=3) if o != (0, 0, 0)]
    return every if connectivity == 26 else [o for o in every if sum(map(abs, o)) == 1]


def graph_bytes(shape: Sequence[int], connectivity: int) -> int:
    """Memory the graph of a (k, j, i) grid takes while it is built."""
    return int(np.prod([s + 2 for s in shape])) * (len(_offsets(connectivity)) * _BYTES_PER_EDGE + _BYTES_PER_VOXEL)


def growing_region(annotation: SparseAnnotation) -> tuple[slice, ...]:
    """The (k, j, i) box that holds every class's grown box."""
    boxes = class_boxes(annotation.labels, annotation.known, annotation.classes).values()
    low = np.min([[b.start for b in box] for box in boxes], axis=0)
    high = np.max([[b.stop for b in box] for box in boxes], axis=0)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


class GrowingGraph:
    """The neighbour graph of one image region, built once and grown from any seed sets."""

    def __init__(self, image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float],
                 connectivity: int = 6) -> None:
        self.region = growing_region(annotation)
        self.shape = annotation.labels.shape
        crop = image[self.region].astype(np.float32)
        self.crop_shape = crop.shape
        self.factors = _coarsening(crop.shape, spacing_ijk[::-1], connectivity)
        if any(f > 1 for f in self.factors):
            crop = _block_means(crop, self.factors)
        self.grid_shape = crop.shape
        spacing_kji = np.array(spacing_ijk[::-1], dtype=float) * self.factors
        self.graph = _graph(crop, spacing_kji, _offsets(connectivity))

    def grow(self, annotation: SparseAnnotation) -> np.ndarray:
        """Dense (k, j, i) labels grown from ``annotation``'s voxels: background outside the region."""
        labels, known = annotation.labels[self.region], annotation.known[self.region]
        if any(f > 1 for f in self.factors):
            small_labels, small_known = _coarse_seeds(labels, known, self.factors, self.grid_shape)
        else:
            small_labels, small_known = labels, known
        grown = self._grow(small_labels, small_known)
        if any(f > 1 for f in self.factors):
            for axis, factor in enumerate(self.factors):
                grown = np.repeat(grown, factor, axis=axis)
            grown = grown[: self.crop_shape[0], : self.crop_shape[1], : self.crop_shape[2]]
        grown = np.where(known, labels, grown)
        result = np.zeros(self.shape, dtype=annotation.labels.dtype)
        result[self.region] = grown
        return result

    def _grow(self, labels: np.ndarray, known: np.ndarray) -> np.ndarray:
        padded = np.pad(known, 1)
        seeds = np.flatnonzero(padded.ravel())
        if seeds.size == 0:
            return np.zeros(labels.shape, dtype=labels.dtype)
        _, _, sources = dijkstra(self.graph, directed=True, indices=seeds, return_predecessors=True,
                                 min_only=True, limit=_WALL / 2)
        flat = np.pad(labels, 1).ravel()
        grown = np.zeros(flat.size, dtype=labels.dtype)
        reached = sources >= 0
        grown[reached] = flat[sources[reached]]
        return grown.reshape(padded.shape)[1:-1, 1:-1, 1:-1]


def grow_labels(image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float],
                connectivity: int = 6) -> np.ndarray:
    """Dense (k, j, i) labels grown from ``annotation`` over ``image`` (k, j, i): background outside the region."""
    return GrowingGraph(image, annotation, spacing_ijk, connectivity).grow(annotation)


def _graph(image: np.ndarray, spacing_kji: np.ndarray, offsets: Sequence[tuple[int, int, int]]) -> csr_matrix:
    """Directed neighbour graph of ``image`` framed by one voxel of wall: every row has one entry per offset."""
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    scale = max(float(high - low), 1e-6)
    framed = np.pad(image / scale, 1, constant_values=_WALL).astype(np.float64).ravel()
    shape = [s + 2 for s in image.shape]
    size = framed.size
    strides = (shape[1] * shape[2], shape[2], 1)
    # Row-major, as CSR stores them: one row's entries together.
    columns = np.empty((size, len(offsets)), dtype=np.int32)
    costs = np.empty((size, len(offsets)), dtype=np.float64)
    rows = np.arange(size, dtype=np.int32)
    difference = np.empty(size, dtype=np.float64)
    for n, offset in enumerate(offsets):
        step = int(np.dot(offset, strides))
        ahead, behind = (slice(step, None), slice(None, size - step)) if step > 0 else \
            (slice(None, size + step), slice(-step, None))
        # Entries that would leave the array start or end on the frame: they cost a wall.
        columns[:, n] = np.clip(rows + step, 0, size - 1)
        difference.fill(_WALL)
        np.abs(framed[ahead] - framed[behind], out=difference[behind])
        difference += LENGTH_COST * float(np.sqrt(np.sum((np.asarray(offset) * spacing_kji) ** 2)))
        costs[:, n] = difference
    indptr = np.arange(0, size * len(offsets) + 1, len(offsets), dtype=np.int64)
    return csr_matrix((costs.ravel(), columns.ravel(), indptr), shape=(size, size))


def _coarsening(shape: tuple[int, ...], spacing_kji: Sequence[float], connectivity: int) -> tuple[int, int, int]:
    """Whole factors per axis at which the graph fits the budget (and a quarter of the memory limit):
    the axis with the finest coarsened spacing grows first, so the grid tends to isotropic."""
    budget = min(MAX_GRAPH_BYTES, memory_limit_bytes() // 4)
    factors = [1, 1, 1]
    while graph_bytes([int(np.ceil(s / f)) for s, f in zip(shape, factors)], connectivity) > budget:
        growable = [axis for axis in range(3) if factors[axis] < shape[axis]]
        if not growable:
            break
        axis = min(growable, key=lambda a: (spacing_kji[a] * factors[a], a))
        factors[axis] += 1
    return (factors[0], factors[1], factors[2])


def _block_means(image: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    padded = [int(np.ceil(s / f)) * f for s, f in zip(image.shape, factors)]
    full = np.pad(image, [(0, p - s) for p, s in zip(padded, image.shape)], mode="edge")
    shape = [p // f for p, f in zip(padded, factors)]
    return full.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(axis=(1, 3, 5))


def _coarse_seeds(labels: np.ndarray, known: np.ndarray, factors: Sequence[int], shape: Sequence[int]):
    """A coarse voxel is a seed when any of its fine voxels is (its label: one of theirs)."""
    small_labels = np.zeros(shape, dtype=labels.dtype)
    small_known = np.zeros(shape, dtype=bool)
    where = np.argwhere(known)
    cells = tuple((where // np.asarray(factors)).T)
    # Foreground wins a coarse cell over background, so a thin structure keeps its seeds.
    order = np.argsort(labels[known] != 0, kind="stable")
    small_labels[tuple(c[order] for c in cells)] = labels[known][order]
    small_known[cells] = True
    return small_labels, small_known
