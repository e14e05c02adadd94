"""The annotation's marked slices (a node attribute) and the label map the engine is given."""


from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from MedSegExtension.errors import InputError
from MedSegExtension.models.card import LabelInfo
from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef

from .segmentation_nodes import (
    segmentation_to_labels,
    segments,
)
from .slice_views import slice_in_view
from .volume_conversion import check_scalar_volume, node_ijk_to_ras

ANNOTATED_SLICES_ATTRIBUTE = "MedSeg.AnnotatedSlices"


# -- the list of marked slices -------------------------------------------------------------------


def format_slices(refs: Iterable[SliceRef]) -> str:
    """``"i:3;k:40,60"``: per axis (i, j, k), indices ascending, no duplicates."""
    by_axis: dict[str, set[int]] = {axis: set() for axis in VOXEL_AXES}
    for ref in refs:
        by_axis[ref.axis].add(int(ref.index))
    return ";".join(f"{axis}:{','.join(str(i) for i in sorted(indices))}" for axis, indices in by_axis.items() if indices)


def parse_slices(text: str | None) -> list[SliceRef]:
    """The slices of a stored list (``"k:40,60;j:100"``), sorted by axis then index."""
    refs: set[SliceRef] = set()
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        match = re.fullmatch(r"([ijk])\s*:\s*([\d,\s]+)", part)
        if not match:
            raise InputError(f"annotated slice list: cannot read {part!r} (expected e.g. 'k:40,60')")
        refs.update(SliceRef(match.group(1), int(n)) for n in match.group(2).split(",") if n.strip())
    return sorted(refs, key=lambda r: (r.axis, r.index))


def marked_slices(annotation_node: Any) -> list[SliceRef]:
    return parse_slices(annotation_node.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE))


def set_marked_slices(annotation_node: Any, refs: Iterable[SliceRef]) -> list[SliceRef]:
    text = format_slices(refs)
    annotation_node.SetAttribute(ANNOTATED_SLICES_ATTRIBUTE, text)
    return parse_slices(text)


def mark_slice(annotation_node: Any, ref: SliceRef) -> list[SliceRef]:
    return set_marked_slices(annotation_node, [*marked_slices(annotation_node), ref])


def unmark_slice(annotation_node: Any, ref: SliceRef) -> list[SliceRef]:
    return set_marked_slices(annotation_node, [r for r in marked_slices(annotation_node) if r != ref])


def mark_slice_in_view(annotation_node: Any, slice_node: Any, volume_node: Any) -> SliceRef:
    """Add the voxel slice of ``volume_node`` shown in a slice view to the annotation's list."""
    if annotation_node is None:
        raise InputError("no annotation segmentation selected")
    check_scalar_volume(volume_node)
    ref = slice_in_view(slice_node, volume_node)
    mark_slice(annotation_node, ref)
    return ref


def known_mask(shape_kji: Sequence[int], refs: Iterable[SliceRef]) -> np.ndarray:
    """(k, j, i) bool: voxels inside the marked slices."""
    mask = np.zeros(tuple(shape_kji), dtype=bool)
    for ref in refs:
        index: list[Any] = [slice(None)] * 3
        index[ref.array_axis] = ref.index
        mask[tuple(index)] = True
    return mask


# -- checks on the annotation --------------------------------------------------------------------


def check_annotation_geometry(annotation_node: Any, volume_node: Any) -> None:
    """InputError unless every painted layer of the annotation lies on the volume's voxel grid."""
    name, volume = annotation_node.GetName(), volume_node.GetName()
    if annotation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"annotation {name!r} and volume {volume!r} are under different transforms; "
                         "put them under the same one (Data module)")
    volume_matrix = node_ijk_to_ras(volume_node)
    inverse = np.linalg.inv(volume_matrix)
    segmentation = annotation_node.GetSegmentation()
    for layer in range(segmentation.GetNumberOfLayers()):
        image = segmentation.GetLayerDataObject(layer)
        if image is None:
            continue
        extent = image.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            continue  # nothing painted in this layer
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        layer_matrix = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        in_volume_voxels = inverse @ layer_matrix  # must be the identity up to an integer shift
        axes_match = np.allclose(in_volume_voxels[:3, :3], np.eye(3), atol=1e-3)
        shift = in_volume_voxels[:3, 3]
        if not axes_match or not np.allclose(shift, np.round(shift), atol=1e-3):
            spacing = tuple(round(float(s), 3) for s in np.linalg.norm(layer_matrix[:3, :3], axis=0))
            volume_spacing = tuple(round(float(s), 3) for s in np.linalg.norm(volume_matrix[:3, :3], axis=0))
            raise InputError(
                f"annotation {name!r} is on a different voxel grid than {volume!r} (spacing {spacing} mm vs "
                f"{volume_spacing} mm, or shifted/rotated); paint it with {volume!r} as the source volume "
                "(Segment Editor) or resample it onto that volume"
            )


@dataclass
class PreparedAnnotation:
    """The annotation as the engine gets it: labels on the volume grid, the classes kept, warnings."""

    labels: sitk.Image
    classes: list[LabelInfo]
    slices: list[SliceRef]
    warnings: list[str] = field(default_factory=list)

    @property
    def slice_spec(self) -> str:
        return format_slices(self.slices)


def prepare_annotation(volume_node: Any, annotation_node: Any, refs: Sequence[SliceRef] | None = None) -> PreparedAnnotation:
    """Check the annotation and export it; a class with no painted voxel in the marked slices is
    dropped with a warning. Raises InputError with one line for every unusable input."""
    check_scalar_volume(volume_node)
    if annotation_node is None:
        raise InputError("no annotation segmentation selected; create one and paint a segment per class")
    if not annotation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"{annotation_node.GetName()}: the annotation must be a segmentation")
    name = annotation_node.GetName()
    if annotation_node.GetScene() is not volume_node.GetScene():
        raise InputError(f"annotation {name!r} is not in the volume's scene")
    if not segments(annotation_node):
        raise InputError(f"annotation {name!r} has no segment; add one segment per class and paint it")
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if annotation_node.GetSegmentation().GetSourceRepresentationName() != labelmap:
        raise InputError(f"annotation {name!r} is not stored as a binary labelmap; paint it in Segment Editor")
    refs = list(marked_slices(annotation_node) if refs is None else refs)
    if not refs:
        raise InputError(f"annotation {name!r} has no marked slice; paint a slice completely, then "
                         "'Mark current slice as annotated'")
    size = volume_node.GetImageData().GetDimensions()
    for ref in refs:
        extent = size[VOXEL_AXES.index(ref.axis)]
        if not 0 <= ref.index < extent:
            raise InputError(f"marked slice {ref} is outside {volume_node.GetName()!r} ({ref.axis} runs 0..{extent - 1}); "
                             "remove it from the list")
    check_annotation_geometry(annotation_node, volume_node)
    labels, infos = segmentation_to_labels(annotation_node, volume_node)
    array = sitk.GetArrayFromImage(labels)
    known = known_mask(array.shape, refs)
    present = set(np.unique(array[known]).tolist())
    kept, warnings = [], []
    for info in infos:
        if info.value in present:
            kept.append(info)
        else:
            warnings.append(f"segment {info.name!r} has no painted voxel in the marked slices; left out of fine-tuning")
            array[array == info.value] = 0
    if not kept:
        raise InputError(f"annotation {name!r} has no labelled voxel in the marked slices "
                         f"({format_slices(refs)}); paint the structures there")
    cleaned = sitk.GetImageFromArray(array)
    cleaned.CopyInformation(labels)
    return PreparedAnnotation(cleaned, kept, refs, warnings)
