"""Spatial priors taken from the annotation itself: where each structure can be.

A user who labels a few slices of a structure has told us roughly where it is. Two rules use
that, for every class separately:

- *box*: the class lies within the bounding box of its labelled voxels, grown on every side by
  ``max(30 % of the box side, half the box's median side, 3 voxels)``. The half-median term
  lets a single slice (a box one voxel thin) grow to about the structure's in-plane size.
  Slicer's Grow from seeds limits itself to the seeds' box plus 20 % in the same spirit.
- *connected*: predicted pieces that touch no voxel labelled as that class are dropped; the
  structure the user means passes through their slices, look-alike tissue elsewhere does not.

And what the user drew stays drawn: annotated voxels keep their labels in the dense result.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import SimpleITK as sitk

from ..inference.pipeline import image_like
from .annotations import SparseAnnotation

Box = tuple[slice, slice, slice]


def class_boxes(labels: np.ndarray, known: np.ndarray, classes: Iterable[int]) -> dict[int, Box]:
    """For each class, its grown bounding box (k, j, i slices) on the array's grid."""
    boxes: dict[int, Box] = {}
    for value in classes:
        present = np.argwhere(known & (labels == value))
        if len(present) == 0:
            continue
        low, high = present.min(axis=0), present.max(axis=0) + 1
        sides = high - low
        grow = np.maximum.reduce([np.ceil(0.3 * sides), np.full(3, np.ceil(0.5 * np.median(sides))), np.full(3, 3)])
        start = np.maximum(low - grow, 0).astype(int)
        stop = np.minimum(high + grow, labels.shape).astype(int)
        boxes[int(value)] = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[assignment]
    return boxes


def union_mask(shape: tuple[int, ...], boxes: Iterable[Box]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for box in boxes:
        mask[box] = True
    return mask


def restrict_to_boxes(prediction: np.ndarray, boxes: dict[int, Box]) -> np.ndarray:
    """Set voxels of each class outside that class's box to background (a copy)."""
    result = prediction.copy()
    for value, box in boxes.items():
        outside = np.ones(prediction.shape, dtype=bool)
        outside[box] = False
        result[outside & (result == value)] = 0
    return result


def keep_annotated_components(prediction: np.ndarray, labels: np.ndarray, known: np.ndarray,
                              classes: Iterable[int]) -> np.ndarray:
    """Per class, drop connected pieces (26-connectivity) that contain no voxel labelled as that class."""
    from scipy import ndimage

    result = prediction.copy()
    for value in classes:
        pieces, count = ndimage.label(result == value, structure=np.ones((3, 3, 3), dtype=bool))
        if count <= 1:
            continue
        seeded = np.unique(pieces[known & (labels == value)])
        result[(pieces > 0) & ~np.isin(pieces, seeded[seeded > 0])] = 0
    return result


def apply_annotation_priors(labels: sitk.Image, annotation: SparseAnnotation) -> sitk.Image:
    """The prediction with each class confined to its box and to pieces touching its labelled voxels."""
    array = sitk.GetArrayFromImage(labels)
    boxes = class_boxes(annotation.labels, annotation.known, annotation.classes)
    array = restrict_to_boxes(array, boxes)
    array = keep_annotated_components(array, annotation.labels, annotation.known, annotation.classes)
    return image_like(array, labels)


def keep_annotated_labels(labels: sitk.Image, annotation: SparseAnnotation) -> sitk.Image:
    """The prediction with the user's own labels on every annotated voxel: what they drew stays drawn."""
    array = sitk.GetArrayFromImage(labels)
    array[annotation.known] = annotation.labels[annotation.known]
    return image_like(array, labels)
