"""Reading label maps and putting a prediction on the reference grid.

Conventions:

- Label maps must hold integers (float files with whole-number values are accepted). A file
  that is an intensity image instead (an MRI or CT given by mistake) is refused with one line,
  never evaluated as hundreds of "classes": see :func:`check_label_map` for the rule.
- The reference defines the grid. A prediction on another grid is resampled onto it with
  nearest-neighbour interpolation; reference voxels outside the prediction's extent count as
  background (with a warning), and grids that do not overlap at all are an error.
- A ``.seg.nrrd`` brings its segment names and colours; a multi-layer one is collapsed into
  one label map when no voxel belongs to two segments.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.atomic import compound_suffix
from ..io.volumes import read_image, same_geometry, squeeze_to_3d

MAX_CLASSES = 1000  # more distinct values than this: an intensity image, not a label map
FEW_CLASSES = 32  # up to this many distinct values a map is never judged by its texture
MAX_LABEL_CHANGE = 0.7  # above this fraction of neighbour pairs that differ: the texture of an image
Color = tuple[int, int, int]


@dataclass
class LabelMap:
    """An integer label image with the names and colours its file carries (``.seg.nrrd``)."""

    image: sitk.Image
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, Color] = field(default_factory=dict)
    source: str = "label map"


def label_array(image: sitk.Image, source: str) -> np.ndarray:
    """The label values of a 3D label image as an integer array (z, y, x); InputError if unusable."""
    image = squeeze_to_3d(image)
    if image.GetDimension() != 3:
        raise InputError(f"{source}: expected a 3D label map, got {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source}: expected one label per voxel, got {image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{source}: not a label map ({array.size - int(finite.sum())} voxels are NaN or infinite)")
        fractional = np.count_nonzero(array != np.round(array))
        if fractional:
            raise InputError(f"{source}: not a label map ({fractional} voxels hold non-integer values)")
        if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise InputError(f"{source}: label values exceed the 32-bit integer range")
        array = array.astype(np.int32)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{source}: unsupported label map pixel type {array.dtype}")
    check_label_map(array, source)
    return array


def check_label_map(array: np.ndarray, source: str) -> None:
    """InputError (one line) when an integer array is an intensity image rather than a label map.

    The rule, chosen so that no real atlas or segmentation trips it: a label map is made of
    regions of one value, so neighbouring voxels mostly agree; in an MRI or CT, even one stored
    as integers, they mostly differ (noise, gradients). A map is refused when it has more than
    :data:`MAX_CLASSES` distinct values, or more than :data:`FEW_CLASSES` and a value change
    between more than :data:`MAX_LABEL_CHANGE` of its neighbour pairs that touch a labelled
    (non-zero) voxel. Measured on the atlases of Debian's ``mricron-data``: label maps
    (AAL 117 values, AICHA 193, JHU 2 mm 49, NeuroMaps 725) change at 9–35% of pairs; the
    Colin27 MRI in its three forms (81–249 values) at 77–91%. A map with few values is never
    refused by its texture (a thin vessel or nerve labelling changes at most pairs).
    """
    distinct = distinct_values(array)
    if len(distinct) > MAX_CLASSES:
        raise InputError(f"{source}: {len(distinct)} distinct values; this looks like an intensity image, "
                         f"not a label map (give the segmentation, not the image)")
    if len(distinct) <= FEW_CLASSES:
        return
    change = neighbour_change_fraction(array)
    if change > MAX_LABEL_CHANGE:
        raise InputError(f"{source}: not a label map: {len(distinct)} distinct values that differ between "
                         f"{100 * change:.0f}% of neighbouring labelled voxels (label maps: under "
                         f"{100 * MAX_LABEL_CHANGE:.0f}%); this looks like an intensity image (give the segmentation, "
                         f"not the image)")


def neighbour_change_fraction(array: np.ndarray) -> float:
    """The fraction of face-neighbour voxel pairs touching a non-zero voxel whose two values differ."""
    labelled = array != 0
    changed = touching = 0
    for axis in range(array.ndim):
        head = [slice(None)] * array.ndim
        tail = [slice(None)] * array.ndim
        head[axis], tail[axis] = slice(1, None), slice(None, -1)
        pairs = labelled[tuple(head)] | labelled[tuple(tail)]
        touching += int(np.count_nonzero(pairs))
        changed += int(np.count_nonzero((array[tuple(head)] != array[tuple(tail)]) & pairs))
    return changed / touching if touching else 0.0


def distinct_values(array: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer array (a histogram when the range is small)."""
    if array.size == 0:
        return []
    low, high = int(array.min()), int(array.max())
    if high - low < 1 << 22:
        counts = np.bincount((array.ravel() - low).astype(np.int64, copy=False), minlength=high - low + 1)
        return [int(v) + low for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(array)]


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.seg.nrrd`` (with segment names).

    A multi-layer ``.seg.nrrd`` (segments stored in several layers) is collapsed into one
    label map when no voxel belongs to two segments; overlapping segments are an InputError.
    """
    path = Path(path)
    image = read_image(path)
    if compound_suffix(path) != ".seg.nrrd":
        label_array(image, str(path))
        return LabelMap(image, source=str(path))
    return _read_segmentation(path, image)


def _read_segmentation(path: Path, image: sitk.Image) -> LabelMap:
    import slicerio

    try:
        segments = slicerio.read_segmentation(str(path), skip_voxels=True).get("segments", [])
    except Exception as exc:  # slicerio raises IOError, ValueError, KeyError for bad headers
        raise InputError(f"{path}: cannot read segment metadata ({exc})") from None
    layers = image.GetNumberOfComponentsPerPixel()
    if layers == 1:
        names = {int(s.get("labelValue", 1)): str(s.get("name", s.get("id", ""))) for s in segments}
        colors = {int(s.get("labelValue", 1)): _unit_color(s["color"]) for s in segments if "color" in s}
        label_array(image, str(path))
        return LabelMap(image, names, colors, str(path))
    stack = sitk.GetArrayFromImage(image)  # (z, y, x, layer)
    overlapping = int(np.count_nonzero(np.count_nonzero(stack, axis=-1) > 1))
    if overlapping:
        raise InputError(
            f"{path}: {overlapping} voxels belong to more than one segment; "
            "a label map needs non-overlapping segments (export one per structure)"
        )
    values = [int(s.get("labelValue", 1)) for s in segments]
    renumber = len(set(values)) != len(values)
    merged = np.zeros(stack.shape[:3], dtype=np.int32)
    names, colors = {}, {}
    for index, segment in enumerate(segments):
        old, layer = int(segment.get("labelValue", 1)), int(segment.get("layer", 0))
        new = index + 1 if renumber else old
        merged[stack[..., layer] == old] = new
        names[new] = str(segment.get("name", segment.get("id", "")))
        if "color" in segment:
            colors[new] = _unit_color(segment["color"])
    flat = sitk.GetImageFromArray(merged)
    flat.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return LabelMap(flat, names, colors, str(path))


def _unit_color(color: Sequence[float]) -> Color:
    r, g, b = (int(round(255 * min(max(float(c), 0.0), 1.0))) for c in list(color)[:3])
    return (r, g, b)


def align_to_reference(
    prediction: sitk.Image, reference: sitk.Image, prediction_source: str = "prediction", reference_source: str = "reference"
) -> tuple[sitk.Image, list[str]]:
    """The prediction on the reference grid (nearest neighbour) and warnings about lost voxels.

    Raises InputError when the two grids share no physical space.
    """
    prediction, reference = squeeze_to_3d(prediction), squeeze_to_3d(reference)
    if same_geometry(prediction, reference):
        return prediction, []
    ones = sitk.Image(prediction.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(prediction)
    covered = sitk.GetArrayFromImage(
        sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    inside = int(np.count_nonzero(covered))
    if inside == 0:
        raise InputError(
            f"{prediction_source}: no physical overlap with {reference_source} "
            f"(origin {_rounded(prediction.GetOrigin())} vs {_rounded(reference.GetOrigin())}, "
            f"size {prediction.GetSize()} vs {reference.GetSize()})"
        )
    warnings = [
        f"{prediction_source}: grid differs from {reference_source}; resampled onto the reference grid (nearest neighbour)"
    ]
    if inside < covered.size:
        warnings.append(
            f"{prediction_source}: {100.0 * (covered.size - inside) / covered.size:.1f}% of the reference grid "
            "lies outside the prediction; counted as background"
        )
    resampled = sitk.Resample(prediction, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, prediction.GetPixelID())
    # prediction foreground that falls outside the reference grid is lost: say how much
    back = sitk.Resample(
        sitk.Cast(reference * 0 + 1, sitk.sitkUInt8), prediction, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    outside = sitk.GetArrayViewFromImage(back) == 0
    lost = int(np.count_nonzero(sitk.GetArrayViewFromImage(prediction)[outside]))
    if lost:
        warnings.append(f"{prediction_source}: {lost} labelled voxels lie outside the reference grid and are ignored")
    return resampled, warnings


def _rounded(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in values)
