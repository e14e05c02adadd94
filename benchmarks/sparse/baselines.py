"""Slicer's two sparse-to-dense tools, run headless from the ``slicer-core`` wheel on SimpleITK images.

- :func:`fill_between_slices` = Segment Editor's *Fill between slices*:
  ``vtkITKMorphologicalContourInterpolator`` on a merged label map (every label, every axis, as
  the effect runs it).
- :func:`grow_from_seeds` = Segment Editor's *Grow from seeds*: ``vtkImageGrowCutSegment`` with the
  source volume's intensities and one seed label per segment (background included), on the seeds'
  bounding box grown like the effect grows it (``max(3 voxels, 20 %)`` per axis, no mask).

Geometry: voxels travel as (k, j, i) numpy arrays; the vtkImageData carries the image's origin,
spacing and direction, but both filters work in index space, so results are mapped back onto the
SimpleITK grid by index (``CopyInformation``), never through physical coordinates (MRML's RAS vs
ITK's LPS never comes into play).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import SimpleITK as sitk

from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef

# The slicer-core wheel's ITK defaults to the TBB threader, whose teardown crashes the interpreter
# at exit (SIGSEGV, most runs) once a threaded vtkITK filter (contour interpolation) has run; the
# platform threader does not. ITK reads this on its first threaded filter, so it is set on import.
# SimpleITK's own ITK reads it too and supports "Platform" (it has no TBB).
os.environ.setdefault("ITK_GLOBAL_DEFAULT_THREADER", "Platform")

LABEL_DTYPE = np.uint16  # label maps handed to the vtk filters
EXTENT_GROWTH = 0.2  # Grow from seeds' margin around the seeds (fraction of their extent), no mask
MIN_MARGIN = 3  # voxels


def _slicer():  # noqa: ANN202 - the slicer module has no stubs
    """The ``slicer`` package of the slicer-core wheel (imported late: it is heavy)."""
    import slicer

    return slicer


def _label_array(image: sitk.Image, what: str) -> np.ndarray:
    array = sitk.GetArrayFromImage(image)
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what}: expected an integer label map, got {image.GetPixelIDTypeAsString()}")
    if array.size and (array.min() < 0 or array.max() > np.iinfo(LABEL_DTYPE).max):
        raise ValueError(f"{what}: label values must lie in 0..{np.iinfo(LABEL_DTYPE).max}")
    return array


def _same_grid(a: sitk.Image, b: sitk.Image, what: str) -> None:
    if a.GetSize() != b.GetSize() or not (
        np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    ):
        raise ValueError(f"{what}: not on the image's grid")


def to_vtk(array: np.ndarray, reference: sitk.Image, start: Sequence[int] = (0, 0, 0)):  # noqa: ANN201
    """A vtkImageData holding ``array`` (k, j, i), placed where voxel ``start`` (i, j, k) of ``reference`` is."""
    import vtk
    from vtk.util import numpy_support

    data = vtk.vtkImageData()
    data.SetDimensions(*array.shape[::-1])
    data.SetSpacing(*reference.GetSpacing())
    data.SetOrigin(*reference.TransformIndexToPhysicalPoint([int(s) for s in start]))
    data.SetDirectionMatrix(*reference.GetDirection())
    # VTK's x-fastest point order is numpy's C order of a (k, j, i) array; deep copy so VTK owns it.
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True))
    return data


def from_vtk(data, shape: tuple[int, ...]) -> np.ndarray:  # noqa: ANN001 - vtkImageData
    """The voxels of a vtkImageData as a (k, j, i) array of ``shape`` (a copy)."""
    from vtk.util import numpy_support

    dims = tuple(data.GetDimensions())[::-1]
    if dims != tuple(shape):
        raise RuntimeError(f"vtk filter returned {dims[::-1]} voxels, expected {tuple(shape)[::-1]}")
    return numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).reshape(shape).copy()


def _like(array: np.ndarray, reference: sitk.Image, pixel_id: int) -> sitk.Image:
    out = sitk.Cast(sitk.GetImageFromArray(array), pixel_id)
    out.CopyInformation(reference)
    return out


def slice_mask(shape: tuple[int, int, int], slices: Iterable[SliceRef]) -> np.ndarray:
    """(k, j, i) bool mask of the voxels inside the given slices."""
    known = np.zeros(shape, dtype=bool)
    for ref in slices:
        if ref.axis not in VOXEL_AXES:
            raise ValueError(f"slice {ref}: axis must be one of {VOXEL_AXES}")
        index: list[slice | int] = [slice(None)] * 3
        index[ref.array_axis] = ref.index
        known[tuple(index)] = True
    return known


def fill_between_slices(
    labels_on_slices: sitk.Image,
    slices: Iterable[SliceRef] | None = None,
    *,
    axis: int = -1,
    ball: bool = False,
) -> sitk.Image:
    """Slicer's *Fill between slices* on a multi-label map; the result is on the input's grid and pixel type.

    ``slices``: the annotated slices; labels outside them are ignored (so a full reference may be
    passed). ``None`` uses the labels as given. ``axis``: ITK axis (0 = i, 1 = j, 2 = k) to
    interpolate along, -1 (the effect's setting) for every axis with annotated slices. ``ball``:
    ball instead of cross structuring element. As in Slicer, a label is interpolated only between
    slices that hold it and whose direct neighbours do not; one slice alone stays one slice.
    """
    array = _label_array(labels_on_slices, "labels")
    if slices is not None:
        array = np.where(slice_mask(array.shape, slices), array, 0)
    interpolator = _slicer().vtkITKMorphologicalContourInterpolator()
    interpolator.SetInputData(to_vtk(array.astype(LABEL_DTYPE), labels_on_slices))
    interpolator.SetAxis(axis)
    interpolator.SetLabel(0)  # 0 = all labels
    interpolator.SetUseBallStructuringElement(ball)
    interpolator.Update()
    result = from_vtk(interpolator.GetOutput(), array.shape)
    return _like(result, labels_on_slices, labels_on_slices.GetPixelID())


def free_label(values: Iterable[int]) -> int:
    """A label value not among ``values`` (their maximum + 1), for the background seed."""
    return max([0, *(int(v) for v in values)]) + 1


def seeds_from_slices(
    labels: sitk.Image, slices: Iterable[SliceRef], background_value: int | None = None
) -> tuple[sitk.Image, int]:
    """Seeds as a Slicer user paints them from complete slices, and the background seed value.

    Inside the slices: each structure's voxels as its own label, the rest as ``background_value``
    (default: one above the largest label); outside them 0 (unknown).
    """
    array = _label_array(labels, "labels")
    if background_value is None:
        background_value = free_label(np.unique(array))
    if background_value <= 0 or background_value in np.unique(array):
        raise ValueError(f"background seed value {background_value} must be positive and unused by the labels")
    known = slice_mask(array.shape, slices)
    seeds = np.where(known, np.where(array > 0, array, background_value), 0).astype(LABEL_DTYPE)
    return _like(seeds, labels, sitk.sitkUInt16), background_value


def seed_region(known: np.ndarray, growth: float | None = EXTENT_GROWTH) -> tuple[slice, slice, slice]:
    """The (k, j, i) box Grow from seeds works in: the seeds' bounding box plus ``max(3, growth × extent)``.

    ``growth=None``: the whole volume.
    """
    if growth is None:
        return tuple(slice(0, n) for n in known.shape)  # type: ignore[return-value]
    box = []
    for axis, size in enumerate(known.shape):
        hits = np.flatnonzero(known.any(axis=tuple(a for a in range(3) if a != axis)))
        low, high = int(hits[0]), int(hits[-1])
        margin = max(MIN_MARGIN, int(growth * (high - low)))
        box.append(slice(max(0, low - margin), min(size, high + margin + 1)))
    return tuple(box)  # type: ignore[return-value]


def grow_from_seeds(
    image: sitk.Image,
    seeds: sitk.Image,
    background_value: int,
    *,
    distance_penalty: float = 0.0,
    extent_growth: float | None = EXTENT_GROWTH,
    mask: sitk.Image | None = None,
) -> sitk.Image:
    """Slicer's *Grow from seeds* (GrowCut): every seed label grows at once; returns labels, background = 0.

    ``seeds``: 0 = unknown, each structure's value, and ``background_value`` for painted background
    (mapped to 0 in the result). ``distance_penalty`` is the effect's *seed locality* (intensity
    per mm, default 0). ``extent_growth``: margin around the seeds' box (Slicer's 0.2 without a
    mask; ``None`` = whole image); voxels outside the box are 0. ``mask``: non-zero voxels are
    excluded (the effect's editable-area mask). Result: the seeds' grid, UInt16.
    """
    _same_grid(image, seeds, "seeds")
    seed_array = _label_array(seeds, "seeds")
    values = set(np.unique(seed_array).tolist()) - {0}
    if background_value not in values:
        raise ValueError(f"seeds: no background seed (value {background_value})")
    if len(values) < 2:
        raise ValueError("seeds: Grow from seeds needs at least two seed labels (a structure and background)")
    box = seed_region(seed_array != 0, extent_growth)
    start = [box[2].start, box[1].start, box[0].start]
    intensity = sitk.GetArrayViewFromImage(image)[box].astype(np.float32)
    seed_crop = seed_array[box].astype(LABEL_DTYPE)
    if min(seed_crop.shape) < 3:
        raise ValueError(f"seeds: region {seed_crop.shape[::-1]} is too thin for Grow from seeds (needs 3 voxels per axis)")

    grow_cut = _slicer().vtkImageGrowCutSegment()
    grow_cut.SetIntensityVolume(to_vtk(intensity, image, start))
    grow_cut.SetSeedLabelVolume(to_vtk(seed_crop, image, start))
    if mask is not None:
        _same_grid(image, mask, "mask")
        mask_crop = (sitk.GetArrayViewFromImage(mask)[box] != 0).astype(np.uint8)
        grow_cut.SetMaskVolume(to_vtk(mask_crop, image, start))
    grow_cut.SetDistancePenalty(float(distance_penalty))
    grow_cut.Update()
    grown = from_vtk(grow_cut.GetOutput(), seed_crop.shape)
    grown[grown == background_value] = 0

    result = np.zeros(seed_array.shape, dtype=LABEL_DTYPE)
    result[box] = grown
    return _like(result, seeds, sitk.sitkUInt16)


def best_threshold_dice(image: sitk.Image, mask: np.ndarray, steps: int = 24) -> tuple[float, float, float]:
    """The best Dice any one intensity interval ``[low, high]`` of ``image`` scores against ``mask`` (k, j, i),
    and that interval: an oracle Threshold effect. Near 1.0 = a threshold task, which cannot tell methods apart.

    The interval ends are searched on ``steps`` + 1 quantiles of the intensities inside ``mask``
    and the image's maximum.
    """
    values = sitk.GetArrayViewFromImage(image)
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("empty mask: no threshold to score")
    edges = np.unique(np.append(np.quantile(values[mask], np.linspace(0.0, 1.0, steps + 1)), values.max()))
    total = int(mask.sum())
    best = (0.0, float(edges[0]), float(edges[-1]))
    for a, low in enumerate(edges):
        above = values >= low
        for high in edges[a:]:
            chosen = above & (values <= high)
            dice = 2.0 * float(np.count_nonzero(chosen & mask)) / (float(np.count_nonzero(chosen)) + total)
            if dice > best[0]:
                best = (dice, float(low), float(high))
    return best
