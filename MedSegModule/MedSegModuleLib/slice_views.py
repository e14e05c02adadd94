"""Slice views <-> voxel slices of a volume: which slice a view shows, and showing a given slice.

A slice view (``vtkMRMLSliceNode``: Red, Yellow, Green) shows the plane ``SliceToRAS``: its
third column is the plane normal, its fourth a point of the plane, in world RAS. A voxel slice
of a volume is ``axis:index`` (``i``, ``j``, ``k``: the volume's own index axes, as the engine's
``--slices`` names them). A view shows a voxel slice when its normal is parallel to that
axis's direction in RAS (within :data:`ALIGNMENT_TOLERANCE_DEG`); the index is the plane's
position along the axis, rounded to the nearest voxel centre (Slicer snaps slice offsets to
voxel centres of the shown volume). Only MRML and numpy: runs headless too.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from MedSegExtension.errors import InputError
from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef

from .volume_conversion import node_ijk_to_ras, numpy_matrix

ALIGNMENT_TOLERANCE_DEG = 1.0
VIEW_NAMES = ("Red", "Yellow", "Green")


def view_name(slice_node: Any) -> str:
    return slice_node.GetLayoutName() or slice_node.GetName()


def _plane(slice_node: Any) -> tuple[np.ndarray, np.ndarray]:
    """(unit normal, point on the plane) of a slice view, in world RAS."""
    matrix = numpy_matrix(slice_node.GetSliceToRAS())
    normal = matrix[:3, 2]
    return normal / np.linalg.norm(normal), matrix[:3, 3]


def _axis_directions(volume_node: Any) -> np.ndarray:
    """Unit RAS direction of each voxel axis (columns i, j, k) of the volume, world frame."""
    columns = node_ijk_to_ras(volume_node, world=True)[:3, :3]
    return columns / np.linalg.norm(columns, axis=0)


def closest_axis(slice_node: Any, volume_node: Any) -> tuple[str, float]:
    """The voxel axis closest to the view's normal, and the angle between them in degrees."""
    normal, _point = _plane(slice_node)
    cosines = np.abs(_axis_directions(volume_node).T @ normal)
    best = int(np.argmax(cosines))
    return VOXEL_AXES[best], math.degrees(math.acos(min(1.0, float(cosines[best]))))


def _voxel_size(volume_node: Any) -> tuple[int, int, int]:
    return tuple(volume_node.GetImageData().GetDimensions())  # type: ignore[return-value]


def slice_in_view(slice_node: Any, volume_node: Any) -> SliceRef:
    """The voxel slice of ``volume_node`` that the view shows; InputError if oblique or outside."""
    axis, angle = closest_axis(slice_node, volume_node)
    view, name = view_name(slice_node), volume_node.GetName()
    if angle > ALIGNMENT_TOLERANCE_DEG:
        raise InputError(f"the {view} view is {angle:.1f}° oblique to the voxel slices of {name}; "
                         "align it first (the view's 'Rotate to volume plane')")
    _normal, point = _plane(slice_node)
    ijk = np.linalg.inv(node_ijk_to_ras(volume_node, world=True)) @ np.append(point, 1.0)
    position = ijk[VOXEL_AXES.index(axis)]
    index = int(math.floor(position + 0.5))
    extent = _voxel_size(volume_node)[VOXEL_AXES.index(axis)]
    if not 0 <= index < extent:
        raise InputError(f"the {view} view shows slice {axis}:{index}, outside {name} ({axis} runs 0..{extent - 1})")
    return SliceRef(axis, index)


def voxel_centre_ras(volume_node: Any, ref: SliceRef) -> np.ndarray:
    """World RAS of the centre of a voxel slice (middle of the other two axes)."""
    size = _voxel_size(volume_node)
    ijk = [(n - 1) / 2.0 for n in size]
    ijk[VOXEL_AXES.index(ref.axis)] = ref.index
    return (node_ijk_to_ras(volume_node, world=True) @ np.array([*ijk, 1.0]))[:3]


def show_slice(slice_nodes: list[Any], volume_node: Any, ref: SliceRef) -> Any:
    """Move the view that shows ``ref.axis`` to slice ``ref.index``; returns that slice node.

    The first view whose normal is parallel to the axis is used; when none is, the first view
    is rotated onto the axis (keeping its other axes as close as possible). InputError for a
    slice outside the volume.
    """
    if not slice_nodes:
        raise InputError("no slice view to show the slice in")
    extent = _voxel_size(volume_node)[VOXEL_AXES.index(ref.axis)]
    if not 0 <= ref.index < extent:
        raise InputError(f"slice {ref} is outside {volume_node.GetName()} ({ref.axis} runs 0..{extent - 1})")
    chosen = None
    for node in slice_nodes:
        axis, angle = closest_axis(node, volume_node)
        if axis == ref.axis and angle <= ALIGNMENT_TOLERANCE_DEG:
            chosen = node
            break
    if chosen is None:
        chosen = slice_nodes[0]
        _rotate_onto_axis(chosen, volume_node, ref.axis)
    centre = voxel_centre_ras(volume_node, ref)
    chosen.JumpSliceByOffsetting(*(float(c) for c in centre))
    return chosen


def _rotate_onto_axis(slice_node: Any, volume_node: Any, axis: str) -> None:
    directions = _axis_directions(volume_node)
    normal, point = _plane(slice_node)
    target = directions[:, VOXEL_AXES.index(axis)]
    if float(target @ normal) < 0:
        target = -target
    transverse = numpy_matrix(slice_node.GetSliceToRAS())[:3, 0]
    transverse = transverse - (transverse @ target) * target
    if np.linalg.norm(transverse) < 1e-6:  # the old x axis was the new normal: take another voxel axis
        transverse = directions[:, (VOXEL_AXES.index(axis) + 1) % 3]
    transverse /= np.linalg.norm(transverse)
    slice_node.SetSliceToRASByNTP(*target, *transverse, *point, 0)
