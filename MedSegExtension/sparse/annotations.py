"""Sparse labels: a label map plus the mask of voxels whose label is known.

Three ways to say which voxels are known:

- *complete slices*: inside a marked slice every voxel counts (painted voxels as their class,
  the rest as background); outside marked slices nothing counts;
- *scribbles*: only painted voxels count; a dedicated background value marks negative strokes;
- an explicit *mask* volume of labelled voxels.

Slices are named by voxel axis (``i``, ``j``, ``k``: the image's own index axes) or by
anatomical plane (``axial``, ``coronal``, ``sagittal``), which is resolved from the image
direction to the voxel axis closest to that plane's normal.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.volumes import require_same_geometry

VOXEL_AXES = ("i", "j", "k")
MAX_LABEL_VALUE = 65535  # label maps are written as uint8/uint16
# Plane name → the LPS axis its normal follows (sagittal slices are cut along left-right, etc.).
PLANE_NORMALS = {"sagittal": 0, "coronal": 1, "axial": 2}


@dataclass(frozen=True)
class SliceRef:
    axis: str  # "i", "j" or "k"
    index: int

    def __str__(self) -> str:
        return f"{self.axis}:{self.index}"

    @property
    def array_axis(self) -> int:
        """Axis of a (k, j, i) numpy array."""
        return 2 - VOXEL_AXES.index(self.axis)


@dataclass
class SparseAnnotation:
    labels: np.ndarray  # (k, j, i) label values; meaningful only where ``known``
    known: np.ndarray  # (k, j, i) bool: voxels that count in the loss
    slices: tuple[SliceRef, ...] = ()

    @property
    def classes(self) -> list[int]:
        """Foreground label values present among the known voxels."""
        return sorted(int(v) for v in np.unique(self.labels[self.known]) if v != 0)

    def weight_map(self) -> np.ndarray:
        return self.known.astype(np.float32)

    def without(self, held_out: SliceRef) -> SparseAnnotation:
        """The same annotation with one slice removed (for a held-out check)."""
        known = self.known.copy()
        for other in self.slices:
            if other != held_out:
                continue
            index = [slice(None)] * 3
            index[held_out.array_axis] = held_out.index
            known[tuple(index)] = False
        rest = tuple(s for s in self.slices if s != held_out)
        # Voxels where a kept slice crosses the held-out one stay known.
        for kept in rest:
            index = [slice(None)] * 3
            index[kept.array_axis] = kept.index
            known[tuple(index)] = True
        return SparseAnnotation(self.labels, known, rest)


def plane_axis(image: sitk.Image, plane: str) -> str:
    """The voxel axis whose direction is closest to the normal of an anatomical plane."""
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    return VOXEL_AXES[int(np.argmax(direction[PLANE_NORMALS[plane]]))]


def parse_slice_spec(spec: str, image: sitk.Image, source: str = "--slices") -> list[SliceRef]:
    """Parse ``k:40,60;j:100`` or ``axial:40;sagittal:90,91`` into slice references, checked against the image."""
    refs: list[SliceRef] = []
    size = image.GetSize()
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        match = re.fullmatch(r"([a-zA-Z]+)\s*:\s*([-\d,\s]+)", part)
        if not match:
            raise InputError(f"{source}: cannot parse {part!r} (expected e.g. 'k:40,60' or 'axial:40')")
        name, numbers = match.group(1).lower(), match.group(2)
        if name in PLANE_NORMALS:
            axis = plane_axis(image, name)
        elif name in VOXEL_AXES:
            axis = name
        else:
            raise InputError(f"{source}: unknown axis {name!r} (use i, j, k, axial, coronal or sagittal)")
        for text in filter(None, (n.strip() for n in numbers.split(","))):
            if not re.fullmatch(r"-?\d+", text):
                raise InputError(f"{source}: slice index {text!r} in {part!r} is not a whole number "
                                 "(list slices one by one, e.g. 'k:40,41,42')")
            index = int(text)
            extent = size[VOXEL_AXES.index(axis)]
            if not 0 <= index < extent:
                raise InputError(f"{source}: slice {name}:{index} is outside the volume ({axis} runs 0..{extent - 1})")
            refs.append(SliceRef(axis, index))
    if not refs:
        raise InputError(f"{source}: no slice given")
    return list(dict.fromkeys(refs))


def _label_array(labels: sitk.Image, source: str = "annotation") -> np.ndarray:
    """Label values as integers in 0..MAX_LABEL_VALUE (what a label map output can hold)."""
    array = sitk.GetArrayFromImage(labels)
    integer = np.issubdtype(array.dtype, np.integer)
    if not integer and (not np.isfinite(array).all() or not np.array_equal(array, np.round(array))):
        raise InputError(f"{source}: not a label map (non-integer values)")
    low, high = (array.min(), array.max()) if array.size else (0, 0)
    if low < 0 or high > MAX_LABEL_VALUE:
        bad = low if low < 0 else high
        raise InputError(f"{source}: label value {bad:g} is outside 0..{MAX_LABEL_VALUE}; "
                         "label values are non-negative whole numbers")
    return array if integer else array.astype(np.int32)


def from_slices(
    image: sitk.Image, labels: sitk.Image, slices: Iterable[SliceRef], labels_name: str = "annotation"
) -> SparseAnnotation:
    """Complete slices: every voxel of a marked slice is known (unpainted ones as background)."""
    require_same_geometry(image, labels, "the image", labels_name)
    array = _label_array(labels, labels_name)
    refs = tuple(slices)
    known = np.zeros(array.shape, dtype=bool)
    for ref in refs:
        index = [slice(None)] * 3
        index[ref.array_axis] = ref.index
        known[tuple(index)] = True
    return _checked(SparseAnnotation(array, known, refs), labels_name)


def from_scribbles(
    image: sitk.Image, labels: sitk.Image, background_value: int, labels_name: str = "annotation"
) -> SparseAnnotation:
    """Scribbles: painted voxels are known; ``background_value`` strokes mean "background here"."""
    require_same_geometry(image, labels, "the image", labels_name)
    array = _label_array(labels, labels_name)
    known = array != 0
    if background_value not in np.unique(array):
        raise InputError(f"{labels_name}: no background strokes (label value {background_value}); "
                         "paint some background so the model learns what is not a structure")
    array = np.where(array == background_value, 0, array)
    return _checked(SparseAnnotation(array, known), labels_name)


def from_mask(image: sitk.Image, labels: sitk.Image, mask: sitk.Image, labels_name: str = "annotation",
              mask_name: str = "mask") -> SparseAnnotation:
    """An explicit labelled-voxel mask: non-zero mask voxels are known."""
    require_same_geometry(image, labels, "the image", labels_name)
    require_same_geometry(image, mask, "the image", mask_name)
    return _checked(SparseAnnotation(_label_array(labels, labels_name), sitk.GetArrayFromImage(mask) != 0), labels_name)


def _checked(annotation: SparseAnnotation, source: str) -> SparseAnnotation:
    if not annotation.known.any():
        raise InputError(f"{source}: no labelled voxel")
    painted = set(np.unique(annotation.labels).tolist()) - {0}
    present = set(annotation.classes)
    if not present:
        raise InputError(f"{source}: the labelled voxels contain no structure, only background")
    missing = sorted(painted - present)
    if missing:
        # Painted outside any marked slice: it does not count; say so rather than train silently without it.
        warnings.warn(f"{source}: label value(s) {missing} have no voxel inside the marked slices and are dropped",
                      stacklevel=3)
        annotation.labels[np.isin(annotation.labels, missing)] = 0
    return annotation
