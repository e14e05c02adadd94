"""Evaluate a prediction segmentation against a reference segmentation, in the background.

Segments are matched by name (a manual mapping covers names that differ); both segmentations
are exported to label maps on one grid with the same value for matched segments, and the
engine's ``python -m MedSegExtension evaluate`` computes every metric (the numbers of the
command line, by construction) plus the HTML report. Only a successful run adds nodes: a
table node (one row per class, one column per metric) and a bar chart of Dice per class.

Which grid: the volume given, else the volume the reference segmentation was drawn on, else the
reference segmentation's own reference grid. That volume is also shown in the report.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slicer
import vtk

from MedSegExtension.errors import InputError
from MedSegExtension.io.atomic import atomic_output

from .background_task import BackgroundTask
from .engine_run import EngineRun
from .scene_guard import nodes_removed_on_error
from .segmentation_nodes import export_segments, segmentation_geometry, segments
from .volume_conversion import check_scalar_volume, volume_node_to_sitk

LEAVE_OUT = None  # mapping value: leave this prediction segment out of the comparison
# (JSON key, table column title) for every number of a class row, in table order.
METRIC_COLUMNS = (
    ("dice", "Dice"), ("iou", "IoU"), ("precision", "Precision"), ("recall", "Recall"),
    ("volume_pred_ml", "Volume pred (mL)"), ("volume_ref_ml", "Volume ref (mL)"),
    ("volume_diff_ml", "Volume diff (mL)"), ("volume_diff_percent", "Volume diff (%)"),
    ("misclassification_rate", "Misclassification rate"), ("fp_fn_ratio", "FP/FN ratio"),
    ("hd95_mm", "HD95 (mm)"), ("hd_mm", "HD (mm)"), ("assd_mm", "ASSD (mm)"),
    ("tp", "TP voxels"), ("fp", "FP voxels"), ("fn", "FN voxels"),
)


@dataclass
class SegmentMatch:
    """Reference segments (value n+1 for the n-th) and the prediction segments sent to each value."""

    reference: list[tuple[str, str, int]]  # (segment id, name, value)
    prediction: list[tuple[str, str, int]]  # (segment id, name, value of its reference segment)
    left_out: list[str]
    unmatched_reference: list[str]


def match_segments(prediction_node: Any, reference_node: Any, mapping: Mapping[str, str | None] | None = None) -> SegmentMatch:
    """Pair prediction segments with reference segments by name, ``mapping`` (prediction name ->
    reference name, or None to leave it out) first. Any prediction segment left unpaired is an
    InputError naming it; so are duplicate reference names and a mapping to an unknown name."""
    mapping = {k: v for k, v in (mapping or {}).items() if v != ""}  # "": no entry (match by name)
    reference = [(segment_id, segment.GetName()) for segment_id, segment in segments(reference_node)]
    if not reference:
        raise InputError(f"reference {reference_node.GetName()!r} has no segment")
    names = [name for _id, name in reference]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"reference {reference_node.GetName()!r} has several segments named "
                         f"{', '.join(repr(n) for n in duplicates)}; rename them")
    value_of = {name: index + 1 for index, name in enumerate(names)}
    unknown = sorted({target for target in mapping.values() if target is not None and target not in value_of})
    if unknown:
        raise InputError(f"the mapping names reference segment(s) {', '.join(repr(n) for n in unknown)} that "
                         f"{reference_node.GetName()!r} does not have")
    paired, left_out, unmatched = [], [], []
    for segment_id, segment in segments(prediction_node):
        name = segment.GetName()
        target = mapping.get(name, name if name in value_of else "")
        if target is None:
            left_out.append(name)
        elif target:
            paired.append((segment_id, name, value_of[target]))
        else:
            unmatched.append(name)
    if unmatched:
        raise InputError(
            f"prediction segment(s) {', '.join(repr(n) for n in unmatched)} have no reference segment of the same "
            f"name (reference: {', '.join(repr(n) for n in names)}); map each to a reference segment or leave it out")
    if not paired:
        raise InputError("no prediction segment is compared with the reference; map at least one")
    used = {value for _i, _n, value in paired}
    return SegmentMatch([(i, n, value_of[n]) for i, n in reference], paired, left_out,
                        [n for n in names if value_of[n] not in used])


def reference_volume(segmentation_node: Any) -> Any | None:
    """The volume a segmentation was drawn on (its reference geometry node), when it is still loaded
    and under the same transform."""
    node = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    if node is None or not node.IsA("vtkMRMLScalarVolumeNode") or node.IsA("vtkMRMLLabelMapVolumeNode"):
        return None
    if node.GetTransformNodeID() != segmentation_node.GetTransformNodeID():
        return None
    image = node.GetImageData()
    return node if image is not None and image.GetPointData().GetScalars() is not None else None


@dataclass
class EvaluationOutcome:
    table_node: Any
    chart_node: Any
    series_node: Any
    results: dict[str, Any]  # the engine's JSON
    report_html: str
    warnings: list[str] = field(default_factory=list)

    @property
    def mean_foreground_dice(self) -> float:
        return _number(self.results["averages"]["foreground"].get("dice"))


def _number(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)  # "inf", "-inf"
    return float(value)


class EvaluationRun(EngineRun):
    """Compare two segmentation nodes; the result is a NEW table node and plot chart."""

    what = "evaluation"

    def __init__(self, scene: Any, prediction_node: Any, reference_node: Any,
                 mapping: Mapping[str, str | None] | None = None, volume_node: Any = None,
                 surface: bool = True, python: str | None = None) -> None:
        for role, node in (("prediction", prediction_node), ("reference", reference_node)):
            if node is None:
                raise InputError(f"no {role} segmentation selected")
            if not node.IsA("vtkMRMLSegmentationNode"):
                raise InputError(f"{node.GetName()}: the {role} must be a segmentation")
            if node.GetScene() is not scene:
                raise InputError(f"{node.GetName()}: the {role} is not in this scene")
        if prediction_node is reference_node:
            raise InputError("the prediction and the reference are the same segmentation")
        if volume_node is None:
            volume_node = reference_volume(reference_node)
        if volume_node is not None:
            check_scalar_volume(volume_node, "grid volume")
        for node in (prediction_node, volume_node):
            if node is not None and node.GetTransformNodeID() != reference_node.GetTransformNodeID():
                raise InputError(f"{node.GetName()} and {reference_node.GetName()} are under different transforms; "
                                 "put them under the same one or harden the transforms (Data module)")
        self.match = match_segments(prediction_node, reference_node, mapping)
        self.grid = volume_node if volume_node is not None else segmentation_geometry(reference_node)
        super().__init__(python)
        self.scene, self.prediction_node, self.reference_node = scene, prediction_node, reference_node
        self.volume_node, self.surface = volume_node, surface

    @property
    def warnings(self) -> list[str]:
        notes = []
        if self.match.left_out:
            notes.append(f"left out of the comparison: {', '.join(self.match.left_out)}")
        if self.match.unmatched_reference:
            notes.append(f"no prediction segment for reference segment(s) {', '.join(self.match.unmatched_reference)} "
                         "(Dice 0)")
        return notes

    def write_inputs(self, workdir: Path) -> list[str]:
        from MedSegExtension.io.volumes import write_image

        reference = export_segments(self.reference_node, [i for i, _n, _v in self.match.reference],
                                    [v for _i, _n, v in self.match.reference], self.grid)
        prediction = export_segments(self.prediction_node, [i for i, _n, _v in self.match.prediction],
                                     [v for _i, _n, v in self.match.prediction], self.grid)
        segmentation = self.reference_node.GetSegmentation()
        labels = [{"value": value, "name": name,
                   "color": [round(255 * c) for c in segmentation.GetSegment(segment_id).GetColor()]}
                  for segment_id, name, value in self.match.reference]
        (workdir / "labels.json").write_text(json.dumps(labels), encoding="utf-8")
        write_image(reference, workdir / "reference.nrrd", compress=False)
        write_image(prediction, workdir / "prediction.nrrd", compress=False)
        args = ["evaluate", str(workdir / "prediction.nrrd"), str(workdir / "reference.nrrd"),
                "--labels", str(workdir / "labels.json"), "--json", str(workdir / "results.json"),
                "--report", str(workdir / "report"), "--progress", "json"]
        if self.volume_node is not None:
            write_image(volume_node_to_sitk(self.volume_node), workdir / "image.nrrd", compress=False)
            args += ["--image", str(workdir / "image.nrrd")]
        if not self.surface:
            args.append("--no-surface")
        return args

    def collect(self, task: BackgroundTask) -> EvaluationOutcome:
        assert self.workdir is not None
        for node in (self.prediction_node, self.reference_node):
            if not self.scene.IsNodePresent(node):
                raise InputError(f"{node.GetName()}: the segmentation was removed during the evaluation")
        results = json.loads((self.workdir / "results.json").read_text(encoding="utf-8"))
        report = (self.workdir / "report" / "report.html").read_text(encoding="utf-8")
        base = f"{self.prediction_node.GetName()} vs {self.reference_node.GetName()}"
        with nodes_removed_on_error(self.scene):
            table = metrics_table(self.scene, results, f"{base} metrics")
            chart, series = dice_chart(self.scene, table, f"{base} Dice")
            for node in (table, chart):
                node.SetAttribute("MedSeg.Prediction", self.prediction_node.GetName())
                node.SetAttribute("MedSeg.Reference", self.reference_node.GetName())
            table.SetAttribute("MedSeg.MeanForegroundDice", str(results["averages"]["foreground"].get("dice")))
        return EvaluationOutcome(table, chart, series, results, report, self.warnings + list(results.get("warnings", [])))


def metrics_table(scene: Any, results: Mapping[str, Any], name: str) -> Any:
    """A NEW table node: columns Segment, Value, In, then one per metric; one row per class."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    columns: list[tuple[str | None, str, Any]] = [("name", "Segment", vtk.vtkStringArray()), ("value", "Value", vtk.vtkIntArray()),
                                                  ("status", "In", vtk.vtkStringArray())]
    columns += [(key, title, vtk.vtkDoubleArray()) for key, title in METRIC_COLUMNS]
    for key, title, array in columns:
        array.SetName(title)
        for row in results["classes"]:
            value = row.get(key)
            if isinstance(array, vtk.vtkStringArray):
                array.InsertNextValue(str(value))
            elif isinstance(array, vtk.vtkIntArray):
                array.InsertNextValue(int(value))
            else:
                array.InsertNextValue(_number(value))
        table.AddColumn(array)
    table.SetUseColumnTitleAsColumnHeader(True)
    return table


def dice_chart(scene: Any, table: Any, name: str) -> tuple[Any, Any]:
    """A NEW bar chart of the table's Dice column, labelled by segment name."""
    series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(name))
    series.SetAndObserveTableNodeID(table.GetID())
    series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeBar)
    series.SetXColumnName("Value")
    series.SetYColumnName("Dice")
    series.SetLabelColumnName("Segment")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", scene.GenerateUniqueName(name))
    chart.AddAndObservePlotSeriesNodeID(series.GetID())
    chart.SetTitle("Dice per class")
    chart.SetXAxisTitle("Label value")
    chart.SetYAxisTitle("Dice")
    chart.SetYAxisRangeAuto(False)
    chart.SetYAxisRange(0.0, 1.0)
    chart.SetLegendVisibility(False)
    return chart, series


def table_rows(table: Any) -> list[dict[str, Any]]:
    """The table's rows as dicts keyed by column title (for scripts and tests)."""
    data = table.GetTable()
    columns = [data.GetColumn(c) for c in range(data.GetNumberOfColumns())]
    rows = []
    for r in range(data.GetNumberOfRows()):
        rows.append({column.GetName(): column.GetValue(r) for column in columns})
    return rows


def export_report(outcome: EvaluationOutcome, folder: str | Path, overwrite: bool = False) -> Path:
    """Write the HTML report as ``folder/report.html`` (self-contained); never replaces a file unless asked."""
    path = Path(folder) / "report.html"
    if path.exists() and not overwrite:
        raise InputError(f"{path}: file exists; choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        tmp.write_text(outcome.report_html, encoding="utf-8")
    return path
