"""Per-class evaluation of a predicted label map against a reference, for one case.

Conventions:

- A class found in only one map gets Dice 0 and HD95 ``inf`` with a warning; a class in
  neither map (named but absent) gets Dice 1 and HD95 0, is listed with status ``neither``
  and is left out of the averages.
- Reading and aligning label maps: :mod:`.label_maps`; which classes are compared and how
  segment names are matched: :mod:`.pairs`; averages and case statistics: :mod:`.statistics`;
  JSON/CSV/table output: :mod:`.formats`; batches of cases: :mod:`.batch`.

Overlap metrics: :mod:`.overlap`; surface distances: :mod:`.surface`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..progress import CancelToken, ProgressCallback, no_progress
from .formats import CSV_COLUMNS, csv_text, jsonable, row_dict, table_header, table_line, write_text
from .label_maps import Color, distinct_values
from .overlap import class_indices, overlap_from_counts
from .pairs import LabelPair, prepare_label_maps, read_label_pair
from .results import ClassResult
from .statistics import class_means
from .surface import surface_metrics


@dataclass
class EvaluationResult:
    """Per-class table, averages and confusion matrix of one prediction against one reference."""

    classes: list[ClassResult]
    confusion: np.ndarray  # [reference class, predicted class], in the order of ``classes``
    spacing_mm: tuple[float, float, float]  # reference grid, (x, y, z)
    voxel_volume_ml: float
    prediction_source: str = "prediction"
    reference_source: str = "reference"
    warnings: list[str] = field(default_factory=list)
    colors: dict[int, Color] = field(default_factory=dict)

    @property
    def values(self) -> list[int]:
        return [row.value for row in self.classes]

    @property
    def names(self) -> list[str]:
        return [row.name for row in self.classes]

    def row(self, value: int) -> ClassResult:
        for row in self.classes:
            if row.value == value:
                return row
        raise KeyError(value)

    @property
    def averages(self) -> dict[str, dict[str, float]]:
        """``{"all": {metric: mean}, "foreground": {...}}`` over classes present in either map."""
        present = [row for row in self.classes if row.status != "neither"]
        return {
            "all": class_means(present),
            "foreground": class_means([row for row in present if row.value != 0]),
        }

    def to_dict(self) -> dict[str, Any]:
        return jsonable(
            {
                "prediction": self.prediction_source,
                "reference": self.reference_source,
                "spacing_mm": list(self.spacing_mm),
                "voxel_volume_ml": self.voxel_volume_ml,
                "classes": [row_dict(row) for row in self.classes],
                "averages": self.averages,
                "confusion_matrix": {
                    "rows": "reference",
                    "columns": "prediction",
                    "values": self.values,
                    "names": self.names,
                    "counts": self.confusion.tolist(),
                },
                "warnings": list(self.warnings),
            }
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        """The JSON text; also written atomically to ``path`` when given."""
        return write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", path)

    def csv_rows(self) -> list[dict[str, Any]]:
        rows = [{"row": "class", **row_dict(row)} for row in self.classes]
        for kind, means in self.averages.items():
            rows.append({"row": f"mean_{kind}", **means})
        return rows

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """One row per class, then ``mean_all`` and ``mean_foreground``; also written to ``path``."""
        return write_text(csv_text(["row", *CSV_COLUMNS], self.csv_rows()), path)

    def format_table(self) -> str:
        """A fixed-width text table for the terminal."""
        lines = [table_header()]
        lines += [table_line(str(row.value), row.name, row_dict(row)) for row in self.classes]
        lines.append("-" * len(lines[0]))
        lines.append(table_line("", "mean (all classes)", self.averages["all"]))
        lines.append(table_line("", "mean (foreground)", self.averages["foreground"]))
        lines.append("In: where the class has voxels (both maps, ref or pred only, none: named but absent)")
        return "\n".join(lines)


def evaluate_label_pair(
    pair: LabelPair,
    *,
    surface: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Every metric for every class of a prepared pair. ``surface=False`` skips HD95/HD/ASSD (NaN)."""
    classes, k = pair.classes, len(pair.classes)
    pred_values, ref_values = set(distinct_values(pair.prediction)), set(distinct_values(pair.reference))
    progress(0.1, "confusion matrix")
    pred_index = class_indices(pair.prediction, classes)
    ref_index = class_indices(pair.reference, classes)
    confusion = np.bincount(ref_index.ravel().astype(np.int64) * k + pred_index.ravel(), minlength=k * k).reshape(k, k)
    spacing = tuple(float(s) for s in pair.reference_image.GetSpacing()[:3])
    voxel_ml = float(np.prod(spacing)) / 1000.0
    if surface:
        pred_boxes = ndimage.find_objects(pred_index + 1, max_label=k)
        ref_boxes = ndimage.find_objects(ref_index + 1, max_label=k)

    rows = []
    for c, value in enumerate(classes):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(0.15 + 0.85 * c / k, f"class {value}")
        tp = int(confusion[c, c])
        fp, fn = int(confusion[:, c].sum()) - tp, int(confusion[c, :].sum()) - tp
        overlap = overlap_from_counts(tp, fp, fn, pair.reference.size, voxel_ml)
        distances = {"hd95_mm": math.nan, "hd_mm": math.nan, "assd_mm": math.nan}
        if surface:
            box = _union_box(pred_boxes[c], ref_boxes[c])
            if box is None:  # in neither map
                distances = {"hd95_mm": 0.0, "hd_mm": 0.0, "assd_mm": 0.0}
            else:
                distances = surface_metrics(pred_index[box] == c, ref_index[box] == c, pair.spacing_zyx).as_dict()
        status = _status(value in pred_values, value in ref_values)
        rows.append(ClassResult(value=value, name=pair.names[value], status=status, **overlap.as_dict(), **distances))
    progress(1.0, "done")
    return EvaluationResult(
        classes=rows,
        confusion=confusion,
        spacing_mm=spacing,  # type: ignore[arg-type]
        voxel_volume_ml=voxel_ml,
        prediction_source=pair.prediction_source,
        reference_source=pair.reference_source,
        warnings=list(pair.warnings),
        colors=dict(pair.colors),
    )


def evaluate_images(
    prediction: sitk.Image,
    reference: sitk.Image,
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
    prediction_names: Mapping[int, str] | None = None,
    reference_names: Mapping[int, str] | None = None,
    surface: bool = True,
    prediction_source: str = "prediction",
    reference_source: str = "reference",
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """Compare two label images class by class (conventions: module docstring).

    ``label_names`` maps value → name (e.g. a model card's labels); ``prediction_names`` /
    ``reference_names`` are names the maps carry themselves (e.g. segment names) and are used
    to match segments by name (see :func:`prepare_label_maps`).
    """
    progress(0.0, "checking label maps")
    pair = prepare_label_maps(
        prediction,
        reference,
        label_names,
        colors=colors,
        prediction_names=prediction_names,
        reference_names=reference_names,
        prediction_source=prediction_source,
        reference_source=reference_source,
    )
    if cancel is not None:
        cancel.raise_if_cancelled()
    return evaluate_label_pair(pair, surface=surface, progress=progress, cancel=cancel)


def evaluate_files(
    prediction: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
    surface: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> EvaluationResult:
    """:func:`evaluate_images` on two label-map files (``.seg.nrrd`` segment names are used)."""
    progress(0.0, "reading label maps")
    pair = read_label_pair(prediction, reference, label_names, colors=colors)
    if cancel is not None:
        cancel.raise_if_cancelled()
    return evaluate_label_pair(pair, surface=surface, progress=progress, cancel=cancel)


def _status(in_pred: bool, in_ref: bool) -> str:
    if in_pred and in_ref:
        return "both"
    if in_ref:
        return "reference_only"
    return "prediction_only" if in_pred else "neither"


def _union_box(a: tuple[slice, ...] | None, b: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    if a is None or b is None:
        return a or b
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True))
