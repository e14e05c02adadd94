"""Sparse labels on the network's grid: loss targets and weights where the annotation reaches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from ..io.volumes import same_geometry
from ..preprocessing import reorient
from ..preprocessing.spatial import resample_onto
from .annotations import SparseAnnotation


def grid_coverage(mask: np.ndarray, image: sitk.Image, grid: sitk.Image, orientation: str) -> np.ndarray:
    """How strongly the (k, j, i) ``mask`` on ``image``'s grid reaches each ``grid`` voxel, in [0, 1].

    On the image's own (reoriented) grid this is the mask itself. On a coarser grid each labelled
    voxel first spreads as a tent one coarse voxel wide (1 at the voxel, 0 a coarse spacing
    away; the maximum where tents overlap), then the coarse voxel centres sample that field. So
    a 1 mm slice on a 2 mm grid weighs 1 on a coarse plane through it, or 0.5 on the two planes
    either side of it; plain interpolation would drop every slice that falls between two planes.
    """
    source = sitk.GetImageFromArray(mask.astype(np.float32))
    source.CopyInformation(image)
    oriented = reorient(source, orientation)
    if same_geometry(oriented, grid, tolerance=1e-6):
        return sitk.GetArrayFromImage(oriented)
    field = sitk.GetArrayFromImage(oriented)
    ratios = np.array(grid.GetSpacing())[::-1] / np.array(oriented.GetSpacing())[::-1]
    for axis, ratio in enumerate(ratios):
        field = _tent_max_filter(field, axis, float(ratio))
    spread = sitk.GetImageFromArray(field)
    spread.CopyInformation(oriented)
    return np.clip(sitk.GetArrayFromImage(resample_onto(spread, grid, "linear")), 0.0, 1.0)


def _tent_max_filter(field: np.ndarray, axis: int, ratio: float) -> np.ndarray:
    """``max_n (1 - |n| / ratio) * field[x - n]`` along ``axis``: a labelled voxel's reach, ``ratio`` voxels wide."""
    if ratio <= 1.0:
        return field
    result = field.copy()
    reach = int(np.ceil(ratio)) - 1
    size = field.shape[axis]
    for offset in range(1, reach + 1):
        factor = 1.0 - offset / ratio
        if offset >= size:
            break
        ahead = [slice(None)] * field.ndim
        behind = [slice(None)] * field.ndim
        ahead[axis], behind[axis] = slice(offset, None), slice(None, -offset)
        np.maximum(result[tuple(ahead)], factor * field[tuple(behind)], out=result[tuple(ahead)])
        np.maximum(result[tuple(behind)], factor * field[tuple(ahead)], out=result[tuple(behind)])
    return result


def sparse_targets(annotation: SparseAnnotation, image: sitk.Image, grid: sitk.Image, values: Sequence[int],
                   orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Channel targets (0 = background, n = ``values[n - 1]``) and loss weights on ``grid``.

    Weight is the labelled voxels' coverage (0 where nobody labelled); the target is the class
    (or background) covering most of the voxel.
    """
    weight = grid_coverage(annotation.known, image, grid, orientation)
    cover = [grid_coverage(annotation.known & (annotation.labels == value), image, grid, orientation)
             for value in (0, *values)]
    target = np.argmax(np.stack(cover), axis=0).astype(np.int64)
    target[weight == 0] = 0
    return target, weight.astype(np.float32)
