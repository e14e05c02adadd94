"""The panel's 'Evaluate' logic on real MRML scenes (``slicer-core``): segments matched by name or
by a manual mapping, the engine in the background, a table node and a Dice bar chart; the same
numbers as ``medseg evaluate`` run on the two segmentations saved by Slicer."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import unittest
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom
from MedSegModuleLib import self_test
from MedSegModuleLib.engine_run import engine_environment
from MedSegModuleLib.evaluation import (
    METRIC_COLUMNS,
    EvaluationRun,
    export_report,
    match_segments,
    table_rows,
)
from MedSegModuleLib.scene_guard import node_ids
from MedSegModuleLib.segmentation_nodes import labels_to_segmentation_node, save_segmentation

from MedSegExtension.errors import CancelledError, InputError
from MedSegExtension.models.card import LabelInfo

pytestmark = pytest.mark.usefixtures("one_thread_engine")  # see conftest.py


def segmentation(env, image: sitk.Image, array: np.ndarray, labels: list[LabelInfo], name: str, volume=None):
    label_image = sitk.GetImageFromArray(array.astype(np.uint8))
    label_image.CopyInformation(image)
    return labels_to_segmentation_node(env.scene, label_image, labels, name, volume)


@pytest.fixture
def pair(env, tmp_path):
    """A phantom's body and blobs as reference; a shifted, eroded version as prediction, with
    other label values and another segment order (matching must go by name). Both were made on
    the phantom volume (their reference grid, as in Slicer)."""
    image = make_phantom(direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    sitk.WriteImage(image, str(tmp_path / "phantom.nrrd"))
    volume = env.load_volume(str(tmp_path / "phantom.nrrd"), "Phantom")
    array = sitk.GetArrayFromImage(image)
    reference = np.zeros(array.shape, np.uint8)
    reference[array > 50] = 1
    reference[array > 250] = 2
    shifted = np.roll(array, 2, axis=2)
    prediction = np.zeros(array.shape, np.uint8)
    prediction[shifted > 60] = 4
    prediction[shifted > 320] = 3
    ref = segmentation(env, image, reference, [LabelInfo(1, "Body", (80, 200, 80)), LabelInfo(2, "Blobs", (230, 80, 80))],
                       "Reference", volume)
    pred = segmentation(env, image, prediction, [LabelInfo(3, "Blobs", (1, 2, 3)), LabelInfo(4, "Body", (4, 5, 6))],
                        "Prediction", volume)
    return image, pred, ref, reference, prediction


def cli_results(tmp_path: Path, pred, ref) -> dict:
    """``medseg evaluate`` on the two segmentations as Slicer saves them (its own name matching)."""
    pred_file = save_segmentation(pred, tmp_path / "pred.seg.nrrd")
    ref_file = save_segmentation(ref, tmp_path / "ref.seg.nrrd")
    out = tmp_path / "cli.json"
    done = subprocess.run([sys.executable, "-m", "MedSegExtension", "evaluate", str(pred_file), str(ref_file), "--json", str(out)],
                          capture_output=True, text=True, env=engine_environment(), timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text())


def as_number(value) -> float:
    return math.nan if value is None else float(value)


def assert_table_equals_cli(table_node, cli: dict) -> None:
    rows = table_rows(table_node)
    assert [(r["Segment"], r["Value"], r["In"]) for r in rows] == [(c["name"], c["value"], c["status"]) for c in cli["classes"]]
    for row, expected in zip(rows, cli["classes"]):
        for key, title in METRIC_COLUMNS:
            np.testing.assert_allclose(row[title], as_number(expected[key]), rtol=1e-12, atol=0, err_msg=f"{row['Segment']} {key}")


def test_table_equals_the_cli_on_the_same_segmentations(env, pair, tmp_path):
    _image, pred, ref, reference, prediction = pair
    before = node_ids(env.scene)
    outcome = EvaluationRun(env.scene, pred, ref).run(timeout=300)  # grid: the reference's own geometry
    cli = cli_results(tmp_path, pred, ref)
    assert [c["name"] for c in cli["classes"]] == ["Background", "Body", "Blobs"]
    assert_table_equals_cli(outcome.table_node, cli)
    body = reference == 1
    predicted_body = prediction == 4
    dice = 2 * np.count_nonzero(body & predicted_body) / (np.count_nonzero(body) + np.count_nonzero(predicted_body))
    assert table_rows(outcome.table_node)[1]["Dice"] == pytest.approx(dice, abs=1e-12)
    assert 0.5 < dice < 0.99  # a real, imperfect overlap
    assert math.isfinite(table_rows(outcome.table_node)[1]["HD95 (mm)"]) and table_rows(outcome.table_node)[1]["HD95 (mm)"] > 0
    assert outcome.mean_foreground_dice == pytest.approx(as_number(cli["averages"]["foreground"]["dice"]), abs=1e-12)
    added = node_ids(env.scene) - before
    assert {env.scene.GetNodeByID(i).GetClassName() for i in added} == {"vtkMRMLTableNode", "vtkMRMLPlotChartNode",
                                                                        "vtkMRMLPlotSeriesNode"}
    assert outcome.table_node.GetName() == "Prediction vs Reference metrics"


def test_a_manual_mapping_gives_the_numbers_of_matching_names(env, pair, tmp_path):
    _image, pred, ref, _reference, _prediction = pair
    matched = EvaluationRun(env.scene, pred, ref, surface=False).run(timeout=300)
    segmentation_ = pred.GetSegmentation()
    for index, new_name in ((0, "blob prediction"), (1, "body prediction")):
        segmentation_.GetNthSegment(index).SetName(new_name)
    with pytest.raises(InputError, match="'blob prediction', 'body prediction' have no reference segment"):
        EvaluationRun(env.scene, pred, ref)
    mapped = EvaluationRun(env.scene, pred, ref, {"blob prediction": "Blobs", "body prediction": "Body"},
                           surface=False).run(timeout=300)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("HD", "ASSD"))} for r in rows]  # noqa: E731
    assert strip(table_rows(mapped.table_node)) == strip(table_rows(matched.table_node))
    assert math.isnan(table_rows(mapped.table_node)[1]["HD95 (mm)"])  # surface distances were not asked for


def test_matching_errors_are_one_line_and_add_nothing(env, pair):
    image, pred, ref, reference, _prediction = pair
    twins = segmentation(env, image, reference, [LabelInfo(1, "Body", (1, 1, 1)), LabelInfo(2, "Body", (2, 2, 2))], "Twins")
    moved = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    cases = [
        (lambda: EvaluationRun(env.scene, pred, twins), "'Twins' has several segments named 'Body'"),
        (lambda: EvaluationRun(env.scene, pred, ref, {"Body": "Liver"}), "'Liver' that 'Reference' does not have"),
        (lambda: EvaluationRun(env.scene, pred, ref, {"Body": None, "Blobs": None}), "no prediction segment is compared"),
        (lambda: EvaluationRun(env.scene, pred, pred), "the same segmentation"),
        (lambda: EvaluationRun(env.scene, None, ref), "no prediction segmentation selected"),
        (lambda: (pred.SetAndObserveTransformNodeID(moved.GetID()), EvaluationRun(env.scene, pred, ref)),
         "Prediction and Reference are under different transforms"),
    ]
    before = node_ids(env.scene)
    for action, fragment in cases:
        with pytest.raises(InputError) as caught:
            action()
        assert fragment in str(caught.value) and "\n" not in str(caught.value)
    assert node_ids(env.scene) == before
    pred.SetAndObserveTransformNodeID(None)
    match = match_segments(pred, ref, {"Body": None})
    assert (match.left_out, match.unmatched_reference) == (["Body"], ["Body"])
    assert [(n, v) for _i, n, v in match.prediction] == [("Blobs", 2)]


def test_cancel_adds_nothing(env, pair):
    _image, pred, ref, _reference, _prediction = pair
    before = node_ids(env.scene)
    run = EvaluationRun(env.scene, pred, ref)
    run.start()
    workdir = run.workdir
    run.cancel()
    assert run.wait(timeout=60) is not None
    with pytest.raises(CancelledError, match="evaluation cancelled; nothing was added"):
        run.finish()
    assert node_ids(env.scene) == before
    assert not workdir.exists()


def test_report_is_exported_and_never_overwritten(env, pair, tmp_path):
    _image, pred, ref, _reference, _prediction = pair
    outcome = EvaluationRun(env.scene, pred, ref, surface=False).run(timeout=300)
    path = export_report(outcome, tmp_path / "out")
    text = path.read_text(encoding="utf-8")
    assert path.name == "report.html" and "Body" in text and "Blobs" in text
    with pytest.raises(InputError, match="file exists"):
        export_report(outcome, tmp_path / "out")
    assert export_report(outcome, tmp_path / "out", overwrite=True) == path


def test_evaluation_self_check(env, tmp_path):
    self_test.check_evaluation(unittest.TestCase(), env.scene, env.load_volume, tmp_path)
