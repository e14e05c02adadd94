"""A prediction and a reference made ready to compare: checked, on one grid, names matched, classes listed.

Conventions:

- Classes are the sorted union of 0 (background), the values found in either map and the
  values of the label names given; background is always a class.
- When a map carries segment names (``.seg.nrrd``), its segments are matched to the
  reference's (or the given label names') values by name (:mod:`.names`).
- A class found in only one map, a value missing from the label names and a named class in
  neither map are reported as warnings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..io.volumes import same_geometry, squeeze_to_3d
from .label_maps import Color, align_to_reference, distinct_values, label_array, read_label_map
from .names import match_by_name, renamed_value


@dataclass
class LabelPair:
    """Prediction and reference as integer arrays (z, y, x) on the reference grid, ready to compare.

    ``classes`` is the sorted class list; ``names`` and ``colors`` are keyed by label value.
    """

    prediction: np.ndarray
    reference: np.ndarray
    reference_image: sitk.Image  # the reference grid (origin, spacing, direction)
    classes: list[int]
    names: dict[int, str]
    colors: dict[int, Color]
    warnings: list[str]
    prediction_source: str = "prediction"
    reference_source: str = "reference"

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.reference_image.GetSpacing()[:3][::-1])  # type: ignore[return-value]


def prepare_label_maps(
    prediction: sitk.Image,
    reference: sitk.Image,
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
    prediction_names: Mapping[int, str] | None = None,
    reference_names: Mapping[int, str] | None = None,
    prediction_colors: Mapping[int, Color] | None = None,
    reference_colors: Mapping[int, Color] | None = None,
    prediction_source: str = "prediction",
    reference_source: str = "reference",
) -> LabelPair:
    """Check both label images, put the prediction on the reference grid and match names.

    ``label_names`` (value → name, e.g. from a model card) wins over the names the maps carry
    (``prediction_names``/``reference_names``, e.g. from ``.seg.nrrd`` segments); segments of
    a map that carries names are renumbered to the value their name has in ``label_names``,
    or else in the reference.
    """
    reference = squeeze_to_3d(reference)
    ref = label_array(reference, reference_source)
    prediction = squeeze_to_3d(prediction)
    pred = label_array(prediction, prediction_source)
    warnings: list[str] = []
    if not same_geometry(prediction, reference):
        integer = sitk.GetImageFromArray(pred)
        integer.CopyInformation(prediction)
        aligned, warnings = align_to_reference(integer, reference, prediction_source, reference_source)
        pred = sitk.GetArrayFromImage(aligned)

    pred_names, pred_colors = dict(prediction_names or {}), dict(prediction_colors or {})
    ref_names, ref_colors = dict(reference_names or {}), dict(reference_colors or {})
    if ref_names and label_names:
        ref, notes = match_by_name(ref, ref_names, label_names, reference_source)
        ref_colors = {renamed_value(v, ref_names, label_names): c for v, c in ref_colors.items() if v in ref_names}
        ref_names = {renamed_value(v, ref_names, label_names): n for v, n in ref_names.items()}
        warnings += notes
    target_names = dict(label_names or ref_names)
    if pred_names and target_names:
        pred, notes = match_by_name(pred, pred_names, target_names, prediction_source)
        pred_colors = {renamed_value(v, pred_names, target_names): c for v, c in pred_colors.items() if v in pred_names}
        pred_names = {renamed_value(v, pred_names, target_names): n for v, n in pred_names.items()}
        warnings += notes

    pred_values, ref_values = set(distinct_values(pred)), set(distinct_values(ref))
    classes = sorted({0} | pred_values | ref_values | set(label_names or {}) | set(ref_names) | set(pred_names))
    names = {0: "Background", **pred_names, **ref_names, **(label_names or {})}
    names = {v: names.get(v, f"Label {v}") for v in classes}
    warnings += _class_set_warnings(classes, pred_values, ref_values, label_names, names)
    merged_colors = {**pred_colors, **ref_colors, **(colors or {})}
    return LabelPair(
        prediction=pred,
        reference=ref,
        reference_image=reference,
        classes=classes,
        names=names,
        colors={int(v): tuple(int(x) for x in c) for v, c in merged_colors.items()},  # type: ignore[misc]
        warnings=warnings,
        prediction_source=prediction_source,
        reference_source=reference_source,
    )


def read_label_pair(
    prediction: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
) -> LabelPair:
    """:func:`prepare_label_maps` on two label-map files (``.seg.nrrd`` segment names are used)."""
    pred_map, ref_map = read_label_map(prediction), read_label_map(reference)
    return prepare_label_maps(
        pred_map.image,
        ref_map.image,
        label_names,
        colors=colors,
        prediction_names=pred_map.names,
        reference_names=ref_map.names,
        prediction_colors=pred_map.colors,
        reference_colors=ref_map.colors,
        prediction_source=str(prediction),
        reference_source=str(reference),
    )


def _class_set_warnings(
    classes: list[int], pred_values: set[int], ref_values: set[int], label_names: Mapping[int, str] | None, names: Mapping[int, str]
) -> list[str]:
    notes = []

    def describe(values: Iterable[int]) -> str:
        return ", ".join(f"{v} ({names.get(v, f'Label {v}')})" for v in values)

    ref_only = [v for v in classes if v in ref_values and v not in pred_values and v != 0]
    pred_only = [v for v in classes if v in pred_values and v not in ref_values and v != 0]
    if ref_only:
        notes.append(f"labels only in the reference (missed entirely; Dice 0, HD95 inf): {describe(ref_only)}")
    if pred_only:
        notes.append(f"labels only in the prediction (Dice 0, HD95 inf): {describe(pred_only)}")
    if label_names:
        unknown = [v for v in classes if v != 0 and v not in label_names and (v in pred_values or v in ref_values)]
        if unknown:
            notes.append(f"label values not in the label names: {', '.join(map(str, unknown))}")
        absent = [v for v in classes if v != 0 and v not in pred_values and v not in ref_values]
        if absent:
            notes.append(
                f"named labels in neither map (Dice 1, HD95 0, left out of the averages): {describe(absent)}"
            )
    return notes
