"""Dice against the user's own labels on the held-out slice: the only reference sparse mode has."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics.overlap import overlap_metrics
from .annotations import SliceRef, SparseAnnotation


def held_out_voxels(annotation: SparseAnnotation, held_out: SliceRef) -> np.ndarray:
    """(k, j, i) bool: the voxels only the held-out slice labels."""
    return annotation.known & ~annotation.without(held_out).known


def class_dice_on(labels: np.ndarray, annotation: SparseAnnotation, where: np.ndarray,
                  values: Sequence[int]) -> list[float]:
    """Each class's Dice of ``labels`` against the annotation on the voxels ``where``."""
    reference, predicted = annotation.labels[where], labels[where]
    return [float(overlap_metrics(predicted == v, reference == v).dice) for v in values]
