"""Voxel-overlap metrics of label maps, all derived from one confusion matrix.

Conventions (stated once, used everywhere):

- The confusion matrix has one row per *reference* class and one column per *predicted*
  class; entry ``[r, c]`` counts the voxels labelled ``r`` in the reference and ``c`` in the
  prediction. For class ``k``: TP = ``cm[k, k]``, FP = column sum - TP, FN = row sum - TP.
- A ratio whose denominator is zero is **1 when both masks are empty** (nothing to find and
  nothing found: a perfect result) and **0 when only one is empty** (Dice, IoU, precision,
  recall); FP/FN ratio is 1 when FP = FN = 0 and ``inf`` when FN = 0 < FP; the volume
  difference in % is 0 when both are empty and ``inf`` when the reference is empty and the
  prediction is not.
- Volume difference is prediction minus reference (positive: over-segmentation).
- Misclassification rate of a class is (FP + FN) / N with N the number of voxels of the grid
  (seed 003); FP/FN ratio is FP / FN (1 means the errors are balanced).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

INF = float("inf")


@dataclass(frozen=True)
class OverlapMetrics:
    """Overlap of one class; volumes in millilitres, rates as fractions (not %)."""

    tp: int
    fp: int
    fn: int
    voxels: int  # N, every voxel of the grid
    dice: float
    iou: float
    precision: float
    recall: float
    volume_pred_ml: float
    volume_ref_ml: float
    volume_diff_ml: float
    volume_diff_percent: float
    misclassification_rate: float
    fp_fn_ratio: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _zero_or_inf(count: int) -> float:
    return 0.0 if count == 0 else INF


def _ratio(numerator: float, denominator: float, both_empty: bool) -> float:
    if denominator == 0:
        return 1.0 if both_empty else 0.0
    return numerator / denominator


def overlap_from_counts(tp: int, fp: int, fn: int, voxels: int, voxel_volume_ml: float = 0.001) -> OverlapMetrics:
    """Every overlap metric of one class from its TP, FP, FN counts and the grid size N.

    ``voxel_volume_ml`` defaults to one cubic millimetre (0.001 mL).
    """
    tp, fp, fn, voxels = int(tp), int(fp), int(fn), int(voxels)
    if min(tp, fp, fn) < 0 or tp + fp + fn > voxels:
        raise ValueError(f"inconsistent counts tp={tp} fp={fp} fn={fn} for {voxels} voxels")
    n_pred, n_ref = tp + fp, tp + fn
    both_empty = n_pred == 0 and n_ref == 0
    volume_pred, volume_ref = n_pred * voxel_volume_ml, n_ref * voxel_volume_ml
    diff_percent = 100.0 * (n_pred - n_ref) / n_ref if n_ref else _zero_or_inf(n_pred)
    fp_fn = fp / fn if fn else (1.0 if fp == 0 else INF)
    return OverlapMetrics(
        tp=tp,
        fp=fp,
        fn=fn,
        voxels=voxels,
        dice=_ratio(2 * tp, n_pred + n_ref, both_empty),
        iou=_ratio(tp, tp + fp + fn, both_empty),
        precision=_ratio(tp, n_pred, both_empty),
        recall=_ratio(tp, n_ref, both_empty),
        volume_pred_ml=volume_pred,
        volume_ref_ml=volume_ref,
        volume_diff_ml=volume_pred - volume_ref,
        volume_diff_percent=diff_percent,
        misclassification_rate=(fp + fn) / voxels if voxels else 0.0,
        fp_fn_ratio=fp_fn,
    )


def overlap_metrics(prediction: np.ndarray, reference: np.ndarray, voxel_volume_ml: float = 0.001) -> OverlapMetrics:
    """Overlap metrics of two binary masks of the same shape (non-zero is foreground)."""
    prediction, reference = np.asarray(prediction, dtype=bool), np.asarray(reference, dtype=bool)
    if prediction.shape != reference.shape:
        raise ValueError(f"mask shapes differ: {prediction.shape} vs {reference.shape}")
    tp = int(np.count_nonzero(prediction & reference))
    fp = int(np.count_nonzero(prediction)) - tp
    fn = int(np.count_nonzero(reference)) - tp
    return overlap_from_counts(tp, fp, fn, prediction.size, voxel_volume_ml)


def class_indices(labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Map every voxel's label value to its position in the sorted ``classes``.

    Raises ``ValueError`` if a voxel holds a value that is not in ``classes``.
    """
    classes_array = np.asarray(classes, dtype=np.int64)
    if classes_array.ndim != 1 or np.any(np.diff(classes_array) <= 0):
        raise ValueError("classes must be strictly increasing")
    index = np.searchsorted(classes_array, labels)
    index = np.minimum(index, len(classes_array) - 1)
    if not np.array_equal(classes_array[index], labels):
        missing = sorted(set(np.unique(labels).tolist()) - set(classes_array.tolist()))
        raise ValueError(f"label values {missing[:10]} are not among the classes")
    return index.astype(np.int32 if len(classes_array) < 2**31 else np.int64)


def confusion_matrix(prediction: np.ndarray, reference: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Voxel counts ``[reference class, predicted class]`` over the sorted ``classes`` (int64)."""
    if prediction.shape != reference.shape:
        raise ValueError(f"label map shapes differ: {prediction.shape} vs {reference.shape}")
    k = len(classes)
    ref_index = class_indices(reference, classes).ravel().astype(np.int64)
    pred_index = class_indices(prediction, classes).ravel()
    return np.bincount(ref_index * k + pred_index, minlength=k * k).reshape(k, k)


def per_class_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP and FN per class from a confusion matrix (rows reference, columns prediction)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix).copy()
    return tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp
