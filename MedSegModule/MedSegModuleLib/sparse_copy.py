"""After fine-tuning: copy a prediction into the annotation outside its marked slices; save a model as."""


from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer

from MedSegExtension.errors import InputError
from MedSegExtension.models.card import ModelCard

from .segmentation_nodes import (
    export_segments,
    segments,
)
from .sparse_slices import check_annotation_geometry, known_mask, marked_slices
from .volume_conversion import check_scalar_volume, node_ijk_to_ras, vtk_matrix

# -- after fine-tuning -----------------------------------------------------------------------------


@dataclass
class CopyReport:
    copied: list[str]  # annotation segments that took the prediction outside the marked slices
    not_in_annotation: list[str]  # prediction segments with no annotation segment of that name
    changed_voxels: int


def _oriented_mask(mask: np.ndarray, volume_node: Any) -> Any:
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[::-1])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(mask.astype(np.uint8).ravel()), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix(node_ijk_to_ras(volume_node)))
    return image


def copy_prediction_into_annotation(annotation_node: Any, prediction_node: Any, volume_node: Any) -> CopyReport:
    """Outside the marked slices, each annotation segment becomes the prediction's segment of the
    same name. Inside marked slices nothing changes; segments without a namesake are kept."""
    if annotation_node is None or prediction_node is None:
        raise InputError("choose both the annotation and a prediction")
    if annotation_node is prediction_node:
        raise InputError("the prediction and the annotation are the same segmentation")
    check_scalar_volume(volume_node)
    check_annotation_geometry(annotation_node, volume_node)
    if prediction_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"prediction {prediction_node.GetName()!r} and volume {volume_node.GetName()!r} are under "
                         "different transforms; put them under the same one (Data module)")
    ours = segments(annotation_node)
    by_name = {segment.GetName(): index + 1 for index, (_id, segment) in enumerate(ours)}
    theirs = [(segment_id, segment.GetName()) for segment_id, segment in segments(prediction_node)]
    matched = [(segment_id, name) for segment_id, name in theirs if name in by_name]
    if not matched:
        raise InputError(f"no segment of {prediction_node.GetName()!r} has the name of a segment of "
                         f"{annotation_node.GetName()!r}; nothing to copy")
    current = sitk.GetArrayFromImage(export_segments(annotation_node, [i for i, _s in ours], range(1, len(ours) + 1), volume_node))
    predicted = sitk.GetArrayFromImage(
        export_segments(prediction_node, [i for i, _n in matched], [by_name[n] for _i, n in matched], volume_node))
    outside = ~known_mask(current.shape, marked_slices(annotation_node))
    targets = sorted({by_name[n] for _i, n in matched})
    wanted = current.copy()
    wanted[outside & np.isin(current, targets)] = 0
    wanted[outside & (predicted > 0)] = predicted[outside & (predicted > 0)]
    changed = [value for value in range(1, len(ours) + 1) if np.any((current == value) != (wanted == value))]
    mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    # Shrink every changed segment first, then grow: no voxel is ever claimed by two segments.
    for masks in ([(current == v) & (wanted == v) for v in changed], [wanted == v for v in changed]):
        for value, mask in zip(changed, masks):
            segment_id = ours[value - 1][0]
            if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                    _oriented_mask(mask, volume_node), annotation_node, segment_id, mode):
                raise InputError(f"could not write segment {ours[value - 1][1].GetName()!r} of {annotation_node.GetName()!r}")
    return CopyReport([ours[v - 1][1].GetName() for v in changed],
                      [n for _i, n in theirs if n not in by_name], int(np.count_nonzero(current != wanted)))


def default_model_name(volume_name: str) -> str:
    """A valid model name from a volume name ("CT chest" -> "CT-chest-sparse")."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", volume_name).strip("-._") or "volume"
    return f"{stem[:56]}-sparse"


def save_model_as(model_folder: str | Path, name: str, user_dir: str | Path | None = None) -> ModelCard:
    """Save a copy of a fine-tuned model under another name (NAME, NAME-v2…; never overwriting)."""
    from MedSegExtension.models.registry import ModelRegistry, next_user_model_folder, verify_weights

    card = ModelCard.load(model_folder)
    weights = verify_weights(card)
    folder, version = next_user_model_folder(name, ModelRegistry(user=Path(user_dir) if user_dir else None))
    source = f"{card.name} {card.version}"
    folder.mkdir(parents=True)
    try:
        shutil.copy2(weights, folder / card.weights_file)
        card.name, card.version, card.folder = name, str(version), folder
        card.training = {**(card.training or {}), "copied_from": source}
        card.save(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return ModelCard.load(folder)
