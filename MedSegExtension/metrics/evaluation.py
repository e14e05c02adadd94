"""Per-class evaluation of a predicted label map against a reference, for one case or a batch.

Conventions:

- The reference defines the grid. A prediction on another grid is resampled onto it with
  nearest-neighbour interpolation; reference voxels outside the prediction's extent count as
  background (with a warning), and grids that do not overlap at all are an error.
- Label maps must hold integers (float files with whole-number values are accepted).
- Classes are the sorted union of 0 (background), the values found in either map and the
  values of the label names given; background is always a class. A class found in only one
  map gets Dice 0 and HD95 ``inf`` with a warning; a class in neither map (named but absent)
  gets Dice 1 and HD95 0, is listed with status ``neither`` and is left out of the averages.
- Averages are plain means over the classes present in at least one map, with background
  (``all``) and without (``foreground``); an ``inf`` distance makes the mean ``inf``.
- When a map carries segment names (``.seg.nrrd``), its segments are matched to the
  reference's (or the given label names') values by name, since Slicer numbers segments
  freely.
- JSON has no infinity: ``inf`` is written as the string ``"inf"`` and NaN as ``null``.

Overlap metrics: :mod:`.overlap`; surface distances: :mod:`.surface`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..errors import InputError
from ..io.atomic import atomic_output, compound_suffix
from ..io.volumes import VOLUME_SUFFIXES, read_image, same_geometry, squeeze_to_3d
from ..progress import CancelToken, ProgressCallback, ScaledProgress, no_progress
from .overlap import class_indices, overlap_from_counts
from .surface import surface_metrics

MAX_CLASSES = 1000  # more distinct values than this: an intensity image, not a label map
STATUSES = ("both", "reference_only", "prediction_only", "neither")
Color = tuple[int, int, int]


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
            "all": _means(present),
            "foreground": _means([row for row in present if row.value != 0]),
        }

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(
            {
                "prediction": self.prediction_source,
                "reference": self.reference_source,
                "spacing_mm": list(self.spacing_mm),
                "voxel_volume_ml": self.voxel_volume_ml,
                "classes": [_row_dict(row) for row in self.classes],
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
        return _write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", path)

    def csv_rows(self) -> list[dict[str, Any]]:
        rows = [{"row": "class", **_row_dict(row)} for row in self.classes]
        for kind, means in self.averages.items():
            rows.append({"row": f"mean_{kind}", **means})
        return rows

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """One row per class, then ``mean_all`` and ``mean_foreground``; also written to ``path``."""
        return _write_text(_csv_text(["row", *CSV_COLUMNS], self.csv_rows()), path)

    def format_table(self) -> str:
        """A fixed-width text table for the terminal."""
        lines = [_table_header()]
        lines += [_table_line(str(row.value), row.name, _row_dict(row)) for row in self.classes]
        lines.append("-" * len(lines[0]))
        lines.append(_table_line("", "mean (all classes)", self.averages["all"]))
        lines.append(_table_line("", "mean (foreground)", self.averages["foreground"]))
        lines.append("In: where the class has voxels (both maps, ref or pred only, none: named but absent)")
        return "\n".join(lines)


# --------------------------------------------------------------------------- label maps


@dataclass
class LabelMap:
    """An integer label image with the names and colours its file carries (``.seg.nrrd``)."""

    image: sitk.Image
    names: dict[int, str] = field(default_factory=dict)
    colors: dict[int, Color] = field(default_factory=dict)
    source: str = "label map"


def label_array(image: sitk.Image, source: str) -> np.ndarray:
    """The label values of a 3D label image as an integer array (z, y, x); InputError if unusable."""
    image = squeeze_to_3d(image)
    if image.GetDimension() != 3:
        raise InputError(f"{source}: expected a 3D label map, got {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{source}: expected one label per voxel, got {image.GetNumberOfComponentsPerPixel()} components")
    array = sitk.GetArrayFromImage(image)
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{source}: not a label map ({array.size - int(finite.sum())} voxels are NaN or infinite)")
        fractional = np.count_nonzero(array != np.round(array))
        if fractional:
            raise InputError(f"{source}: not a label map ({fractional} voxels hold non-integer values)")
        if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
            raise InputError(f"{source}: label values exceed the 32-bit integer range")
        array = array.astype(np.int32)
    elif not np.issubdtype(array.dtype, np.integer):
        raise InputError(f"{source}: unsupported label map pixel type {array.dtype}")
    distinct = distinct_values(array)
    if len(distinct) > MAX_CLASSES:
        raise InputError(
            f"{source}: {len(distinct)} distinct values; this looks like an intensity image, not a label map"
        )
    return array


def distinct_values(array: np.ndarray) -> list[int]:
    """Sorted distinct values of an integer array (a histogram when the range is small)."""
    if array.size == 0:
        return []
    low, high = int(array.min()), int(array.max())
    if high - low < 1 << 22:
        counts = np.bincount((array.ravel() - low).astype(np.int64, copy=False), minlength=high - low + 1)
        return [int(v) + low for v in np.flatnonzero(counts)]
    return [int(v) for v in np.unique(array)]


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read ``.nii``, ``.nii.gz``, ``.nrrd``, ``.mha`` or ``.seg.nrrd`` (with segment names).

    A multi-layer ``.seg.nrrd`` (segments stored in several layers) is collapsed into one
    label map when no voxel belongs to two segments; overlapping segments are an InputError.
    """
    path = Path(path)
    image = read_image(path)
    if compound_suffix(path) != ".seg.nrrd":
        label_array(image, str(path))
        return LabelMap(image, source=str(path))
    return _read_segmentation(path, image)


def _read_segmentation(path: Path, image: sitk.Image) -> LabelMap:
    import slicerio

    try:
        segments = slicerio.read_segmentation(str(path), skip_voxels=True).get("segments", [])
    except Exception as exc:  # slicerio raises IOError, ValueError, KeyError for bad headers
        raise InputError(f"{path}: cannot read segment metadata ({exc})") from None
    layers = image.GetNumberOfComponentsPerPixel()
    if layers == 1:
        names = {int(s.get("labelValue", 1)): str(s.get("name", s.get("id", ""))) for s in segments}
        colors = {int(s.get("labelValue", 1)): _unit_color(s["color"]) for s in segments if "color" in s}
        label_array(image, str(path))
        return LabelMap(image, names, colors, str(path))
    stack = sitk.GetArrayFromImage(image)  # (z, y, x, layer)
    overlapping = int(np.count_nonzero(np.count_nonzero(stack, axis=-1) > 1))
    if overlapping:
        raise InputError(
            f"{path}: {overlapping} voxels belong to more than one segment; "
            "a label map needs non-overlapping segments (export one per structure)"
        )
    values = [int(s.get("labelValue", 1)) for s in segments]
    renumber = len(set(values)) != len(values)
    merged = np.zeros(stack.shape[:3], dtype=np.int32)
    names, colors = {}, {}
    for index, segment in enumerate(segments):
        old, layer = int(segment.get("labelValue", 1)), int(segment.get("layer", 0))
        new = index + 1 if renumber else old
        merged[stack[..., layer] == old] = new
        names[new] = str(segment.get("name", segment.get("id", "")))
        if "color" in segment:
            colors[new] = _unit_color(segment["color"])
    flat = sitk.GetImageFromArray(merged)
    flat.CopyInformation(sitk.VectorIndexSelectionCast(image, 0))
    return LabelMap(flat, names, colors, str(path))


def _unit_color(color: Sequence[float]) -> Color:
    r, g, b = (int(round(255 * min(max(float(c), 0.0), 1.0))) for c in list(color)[:3])
    return (r, g, b)


# --------------------------------------------------------------------------- grids


def align_to_reference(
    prediction: sitk.Image, reference: sitk.Image, prediction_source: str = "prediction", reference_source: str = "reference"
) -> tuple[sitk.Image, list[str]]:
    """The prediction on the reference grid (nearest neighbour) and warnings about lost voxels.

    Raises InputError when the two grids share no physical space.
    """
    prediction, reference = squeeze_to_3d(prediction), squeeze_to_3d(reference)
    if same_geometry(prediction, reference):
        return prediction, []
    ones = sitk.Image(prediction.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(prediction)
    covered = sitk.GetArrayFromImage(
        sitk.Resample(ones, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    inside = int(np.count_nonzero(covered))
    if inside == 0:
        raise InputError(
            f"{prediction_source}: no physical overlap with {reference_source} "
            f"(origin {_rounded(prediction.GetOrigin())} vs {_rounded(reference.GetOrigin())}, "
            f"size {prediction.GetSize()} vs {reference.GetSize()})"
        )
    warnings = [
        f"{prediction_source}: grid differs from {reference_source}; resampled onto the reference grid (nearest neighbour)"
    ]
    if inside < covered.size:
        warnings.append(
            f"{prediction_source}: {100.0 * (covered.size - inside) / covered.size:.1f}% of the reference grid "
            "lies outside the prediction; counted as background"
        )
    resampled = sitk.Resample(prediction, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, prediction.GetPixelID())
    # prediction foreground that falls outside the reference grid is lost: say how much
    back = sitk.Resample(
        sitk.Cast(reference * 0 + 1, sitk.sitkUInt8), prediction, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
    )
    outside = sitk.GetArrayViewFromImage(back) == 0
    lost = int(np.count_nonzero(sitk.GetArrayViewFromImage(prediction)[outside]))
    if lost:
        warnings.append(f"{prediction_source}: {lost} labelled voxels lie outside the reference grid and are ignored")
    return resampled, warnings


def _rounded(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(round(float(v), 2) for v in values)


# --------------------------------------------------------------------------- one case


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
        ref, notes = _match_by_name(ref, ref_names, label_names, reference_source)
        ref_colors = {_renamed(v, ref_names, label_names): c for v, c in ref_colors.items() if v in ref_names}
        ref_names = {_renamed(v, ref_names, label_names): n for v, n in ref_names.items()}
        warnings += notes
    target_names = dict(label_names or ref_names)
    if pred_names and target_names:
        pred, notes = _match_by_name(pred, pred_names, target_names, prediction_source)
        pred_colors = {_renamed(v, pred_names, target_names): c for v, c in pred_colors.items() if v in pred_names}
        pred_names = {_renamed(v, pred_names, target_names): n for v, n in pred_names.items()}
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


def _renamed(value: int, names: Mapping[int, str], target: Mapping[int, str]) -> int:
    by_name = _unique_name_index(target)
    return by_name.get(names[value], value)


def _unique_name_index(names: Mapping[int, str]) -> dict[str, int]:
    seen: dict[str, list[int]] = {}
    for value, name in names.items():
        seen.setdefault(name, []).append(value)
    return {name: values[0] for name, values in seen.items() if len(values) == 1}


def _match_by_name(
    array: np.ndarray, names: Mapping[int, str], target: Mapping[int, str], source: str
) -> tuple[np.ndarray, list[str]]:
    """Renumber ``array`` so that a segment named like a target label gets that label's value.

    Segments whose name is not among the targets keep their value, with a warning when the
    target calls that value something else.
    """
    by_name = _unique_name_index(target)
    remap = {v: by_name[n] for v, n in names.items() if n in by_name and by_name[n] != v}
    notes = []
    unmatched = [(v, n) for v, n in names.items() if n not in by_name and v in target and target[v] != n]
    if unmatched:
        listed = ", ".join(f"{n!r} ({v}) is {target[v]!r}" for v, n in sorted(unmatched))
        notes.append(f"{source}: segment names not found, compared by value: {listed}")
    if not remap:
        return array, notes
    out = array.copy()
    for old, new in remap.items():
        out[array == old] = new
    moved = ", ".join(f"{names[o]!r} {o}→{n}" for o, n in sorted(remap.items()))
    notes.append(f"{source}: label values matched by segment name ({moved})")
    if len({_renamed(v, names, target) for v in names}) < len(names):
        notes.append(f"{source}: after matching by name, two segments share one label value")
    return out, notes


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


# --------------------------------------------------------------------------- batch


@dataclass(frozen=True)
class SummaryStats:
    """Mean, median and quartiles of one metric over cases (``inf`` values kept)."""

    n: int
    mean: float
    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return 0.0 if self.q1 == self.q3 else self.q3 - self.q1

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "median": self.median, "q1": self.q1, "q3": self.q3, "iqr": self.iqr}


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values that may contain ``inf`` (numpy gives NaN)."""
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    a, b = ordered[low], ordered[high]
    if low == high or a == b:
        return float(a)
    return float(a + (b - a) * (position - low))


def summarize(values: Iterable[float]) -> SummaryStats:
    """Summary statistics of the non-NaN values; NaN everywhere when there are none."""
    ordered = sorted(float(v) for v in values if not math.isnan(float(v)))
    if not ordered:
        return SummaryStats(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.inf if math.inf in ordered else float(np.mean(ordered))
    return SummaryStats(len(ordered), mean, _quantile(ordered, 0.5), _quantile(ordered, 0.25), _quantile(ordered, 0.75))


@dataclass
class BatchResult:
    """Per-case results of two folders matched by file name, and their summary."""

    cases: list[tuple[str, EvaluationResult]]
    warnings: list[str] = field(default_factory=list)
    sources: dict[str, tuple[str, str]] = field(default_factory=dict)  # case → (prediction, reference) paths

    def class_names(self) -> dict[int, str]:
        names: dict[int, str] = {}
        for _case, result in self.cases:
            for row in result.classes:
                names.setdefault(row.value, row.name)
        return dict(sorted(names.items()))

    def class_summary(self) -> dict[int, dict[str, SummaryStats]]:
        """For every class, each metric summarized over the cases where the class is present."""
        summary = {}
        for value in self.class_names():
            rows = [r.row(value) for _c, r in self.cases if value in r.values and r.row(value).status != "neither"]
            summary[value] = {m: summarize(getattr(row, m) for row in rows) for m in METRIC_FIELDS}
        return summary

    def average_summary(self) -> dict[str, dict[str, SummaryStats]]:
        """Each metric's per-case average (``all`` / ``foreground``) summarized over cases."""
        return {
            kind: {m: summarize(r.averages[kind][m] for _c, r in self.cases) for m in METRIC_FIELDS}
            for kind in ("all", "foreground")
        }

    def combined_confusion(self) -> tuple[list[int], np.ndarray]:
        """Classes and the confusion matrix summed over every case."""
        values = sorted({v for _c, r in self.cases for v in r.values})
        position = {v: i for i, v in enumerate(values)}
        total = np.zeros((len(values), len(values)), dtype=np.int64)
        for _case, result in self.cases:
            index = [position[v] for v in result.values]
            total[np.ix_(index, index)] += result.confusion
        return values, total

    def to_dict(self) -> dict[str, Any]:
        names = self.class_names()
        return _jsonable(
            {
                "cases": [{"case": case, **result.to_dict()} for case, result in self.cases],
                "summary": {
                    "classes": [
                        {"value": v, "name": names[v], **{m: s.as_dict() for m, s in stats.items()}}
                        for v, stats in self.class_summary().items()
                    ],
                    "averages": {
                        kind: {m: s.as_dict() for m, s in stats.items()} for kind, stats in self.average_summary().items()
                    },
                },
                "warnings": list(self.warnings),
            }
        )

    def to_json(self, path: str | os.PathLike[str] | None = None) -> str:
        return _write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n", path)

    def to_csv(self, path: str | os.PathLike[str] | None = None) -> str:
        """Long format: every case's rows (``row`` = class/mean_all/mean_foreground), then the summary
        (``row`` = summary_mean/median/q1/q3/iqr per class and for the per-case averages)."""
        rows = [{"case": case, **row} for case, result in self.cases for row in result.csv_rows()]
        names, classes, averages = self.class_names(), self.class_summary(), self.average_summary()
        for statistic in ("mean", "median", "q1", "q3", "iqr"):
            for value, stats in classes.items():
                rows.append(
                    {"case": "", "row": f"summary_{statistic}", "value": value, "name": names[value],
                     **{m: getattr(s, statistic) for m, s in stats.items()}}
                )
            for kind, stats in averages.items():
                rows.append(
                    {"case": "", "row": f"summary_{statistic}", "name": f"mean_{kind}",
                     **{m: getattr(s, statistic) for m, s in stats.items()}}
                )
        return _write_text(_csv_text(["case", "row", *CSV_COLUMNS], rows), path)

    def format_table(self) -> str:
        """Per-case foreground means, then per-class mean / median / IQR of Dice and HD95."""
        width = max([len(case) for case, _r in self.cases] + [4])
        lines = [f"{'Case':<{width}}  {'Dice':>6} {'IoU':>6} {'HD95mm':>8} {'ASSDmm':>8}  (foreground means)"]
        for case, result in self.cases:
            a = result.averages["foreground"]
            lines.append(
                f"{case:<{width}}  {format_number(a['dice']):>6} {format_number(a['iou']):>6} {format_number(a['hd95_mm'], 2):>8} {format_number(a['assd_mm'], 2):>8}"
            )
        lines.append("")
        lines.append(
            f"{'Value':>5} {'Name':<24} {'n':>3} {'Dice mean':>9} {'median':>7} {'IQR':>6}"
            f" {'HD95 mean':>9} {'median':>7} {'IQR':>6}"
        )
        names = self.class_names()
        summary = [(str(v), names[v], s) for v, s in self.class_summary().items()]
        summary += [("", f"mean ({kind})", s) for kind, s in self.average_summary().items()]
        for value, name, stats in summary:
            d, h = stats["dice"], stats["hd95_mm"]
            lines.append(
                f"{value:>5} {name[:24]:<24} {d.n:>3} {format_number(d.mean):>9} {format_number(d.median):>7} {format_number(d.iqr):>6}"
                f" {format_number(h.mean, 2):>9} {format_number(h.median, 2):>7} {format_number(h.iqr, 2):>6}"
            )
        return "\n".join(lines)


def volume_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Volume files directly in ``folder`` by case name (file name without its volume suffix)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        suffix = compound_suffix(path)
        if path.name.startswith(".") or not path.is_file() or suffix not in VOLUME_SUFFIXES:
            continue
        case = path.name[: -len(suffix)]
        if case in found:
            raise InputError(f"{folder}: two files for case {case!r} ({found[case].name}, {path.name})")
        found[case] = path
    return found


def match_cases(
    prediction_folder: str | os.PathLike[str], reference_folder: str | os.PathLike[str]
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """(case, prediction, reference) for every file name found in both folders, and warnings."""
    predictions, references = volume_files(prediction_folder), volume_files(reference_folder)
    common = sorted(set(predictions) & set(references))
    if not common:
        raise InputError(
            f"{prediction_folder}: no file name matches one in {reference_folder} "
            f"({len(predictions)} and {len(references)} volume files)"
        )
    warnings = []
    for folder, names, other in (
        (prediction_folder, predictions, references),
        (reference_folder, references, predictions),
    ):
        unmatched = sorted(set(names) - set(other))
        if unmatched:
            listed = ", ".join(unmatched[:10]) + (" …" if len(unmatched) > 10 else "")
            warnings.append(f"{folder}: {len(unmatched)} files without a match, skipped: {listed}")
    return [(case, predictions[case], references[case]) for case in common], warnings


def evaluate_folders(
    prediction_folder: str | os.PathLike[str],
    reference_folder: str | os.PathLike[str],
    label_names: Mapping[int, str] | None = None,
    *,
    colors: Mapping[int, Color] | None = None,
    surface: bool = True,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    on_case: Callable[[str, EvaluationResult], None] | None = None,
) -> BatchResult:
    """:func:`evaluate_files` for every pair of files with the same name in the two folders."""
    pairs, warnings = match_cases(prediction_folder, reference_folder)
    cases = []
    for index, (case, pred_path, ref_path) in enumerate(pairs):
        if cancel is not None:
            cancel.raise_if_cancelled()
        sub = ScaledProgress(progress, index / len(pairs), (index + 1) / len(pairs))
        result = evaluate_files(
            pred_path, ref_path, label_names, colors=colors, surface=surface,
            progress=lambda f, m, case=case, sub=sub: sub(f, f"{case}: {m}"), cancel=cancel,
        )
        warnings += [f"{case}: {w}" for w in result.warnings]
        cases.append((case, result))
        if on_case is not None:
            on_case(case, result)
    return BatchResult(cases, warnings, {case: (str(p), str(r)) for case, p, r in pairs})


# --------------------------------------------------------------------------- formatting


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


def _means(rows: Sequence[ClassResult]) -> dict[str, float]:
    result = {}
    for metric in METRIC_FIELDS:
        values = [getattr(row, metric) for row in rows]
        result[metric] = float(np.mean(values)) if values else math.nan
    return result


def _row_dict(row: ClassResult) -> dict[str, Any]:
    return {f.name: getattr(row, f.name) for f in fields(row)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    return value


def _csv_text(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(float(v)) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _write_text(text: str, path: str | os.PathLike[str] | None) -> str:
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


def _table_header() -> str:
    return f"{'Value':>5} {'Name':<24} {'In':<4}" + "".join(f" {title:>8}" for title, _m, _d in _TABLE)


_STATUS_SHORT = {"both": "both", "reference_only": "ref", "prediction_only": "pred", "neither": "none"}


def _table_line(value: str, name: str, metrics: Mapping[str, Any]) -> str:
    status = _STATUS_SHORT.get(metrics.get("status", ""), "")
    return f"{value:>5} {name[:24]:<24} {status:<4}" + "".join(
        f" {format_number(metrics[m], d):>8}" for _t, m, d in _TABLE
    )
