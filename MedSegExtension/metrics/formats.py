"""JSON, CSV and fixed-width table text of evaluation results.

Conventions: JSON has no infinity, so ``inf`` is written as the string ``"inf"`` and NaN as
``null``; CSV writes floats with ``repr`` (``inf``, ``nan`` and full precision); files are written
atomically (:func:`~MedSegExtension.io.atomic.atomic_output`).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any

import numpy as np

from ..io.atomic import atomic_output
from .results import COUNT_FIELDS, METRIC_FIELDS, ClassResult

CSV_COLUMNS = ("value", "name", "status", *METRIC_FIELDS, *COUNT_FIELDS)
_TABLE = (  # (column title, metric, decimals)
    ("Dice", "dice", 4),
    ("IoU", "iou", 4),
    ("Prec", "precision", 4),
    ("Recall", "recall", 4),
    ("Pred mL", "volume_pred_ml", 2),
    ("Ref mL", "volume_ref_ml", 2),
    ("dVol %", "volume_diff_percent", 1),
    ("Miscl.", "misclassification_rate", 5),
    ("FP/FN", "fp_fn_ratio", 2),
    ("HD95 mm", "hd95_mm", 2),
    ("ASSD mm", "assd_mm", 2),
)


def row_dict(row: ClassResult) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(row)}


def jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def write_text(text: str, path: str | os.PathLike[str] | None) -> str:
    if path is not None:
        with atomic_output(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    return text


def format_number(value: float, decimals: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def table_header() -> str:
    return f"{'Value':>5} {'Name':<24} {'In':<4}" + "".join(f" {title:>8}" for title, _m, _d in _TABLE)


_STATUS_SHORT = {"both": "both", "reference_only": "ref", "prediction_only": "pred", "neither": "none"}


def table_line(value: str, name: str, metrics: Mapping[str, Any]) -> str:
    status = _STATUS_SHORT.get(metrics.get("status", ""), "")
    return f"{value:>5} {name[:24]:<24} {status:<4}" + "".join(
        f" {format_number(metrics[m], d):>8}" for _t, m, d in _TABLE
    )
