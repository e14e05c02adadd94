"""The per-class result row of an evaluation and the names of its metric fields."""

from __future__ import annotations

from dataclasses import dataclass, fields

STATUSES = ("both", "reference_only", "prediction_only", "neither")


@dataclass(frozen=True)
class ClassResult:
    """Every metric of one class. Volumes in mL, distances in mm, rates as fractions."""

    value: int
    name: str
    status: str  # one of STATUSES: where the class has voxels
    tp: int
    fp: int
    fn: int
    voxels: int
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
    hd95_mm: float
    hd_mm: float
    assd_mm: float


COUNT_FIELDS = ("tp", "fp", "fn", "voxels")
METRIC_FIELDS = tuple(
    f.name for f in fields(ClassResult) if f.name not in ("value", "name", "status", *COUNT_FIELDS)
)
