"""The panel's 'Sparse annotation' logic on real MRML scenes (``slicer-core``), the real engine in a
subprocess: slice views -> voxel slices, the marked list, fine-tuning, copy, suggestions, cancel.

The end-to-end checks are the ones ``MedSegModuleTest`` runs inside Slicer
(``MedSegModule/MedSegModuleLib/self_test.py``); the rest pin down the pieces.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom
from MedSegModuleLib import self_test
from MedSegModuleLib.scene_guard import node_ids
from MedSegModuleLib.segmentation_nodes import labels_to_segmentation_node, segmentation_to_labels, segments
from MedSegModuleLib.slice_views import closest_axis, show_slice, slice_in_view
from MedSegModuleLib.sparse_annotation import SparseRun, SparseSettings
from MedSegModuleLib.sparse_copy import copy_prediction_into_annotation, default_model_name, save_model_as
from MedSegModuleLib.sparse_report import (
    ordered_suggestions,
    parse_finetune_output,
    parse_suggestions_json,
    parse_training_progress,
)
from MedSegModuleLib.sparse_slices import (
    ANNOTATED_SLICES_ATTRIBUTE,
    format_slices,
    mark_slice,
    marked_slices,
    parse_slices,
    set_marked_slices,
    unmark_slice,
)
from MedSegModuleLib.volume_conversion import node_ijk_to_ras

from MedSegExtension.errors import InputError, ModelError
from MedSegExtension.models.card import LabelInfo
from MedSegExtension.sparse.annotations import SliceRef

OBLIQUE = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)  # i: anterior-posterior, j: left-right, k: inferior-superior


pytestmark = pytest.mark.usefixtures("one_thread_engine")  # see conftest.py


@pytest.fixture
def registry_env(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    return tiny_model_dir


def load(env, image: sitk.Image, path: Path, name: str = "Phantom"):
    sitk.WriteImage(image, str(path))
    return env.load_volume(str(path), name)


# -- slice views -> voxel slices ---------------------------------------------------------------


def test_each_view_shows_the_voxel_axis_its_normal_follows(env, tmp_path):
    volume = load(env, make_phantom(direction=OBLIQUE), tmp_path / "v.nrrd")
    red, yellow, green = env.slice_views()
    assert [n.GetLayoutName() for n in (red, yellow, green)] == ["Red", "Yellow", "Green"]
    # Axial (normal S) follows k (LPS z reversed); sagittal (normal R) follows j; coronal (normal A) follows i.
    assert [closest_axis(n, volume)[0] for n in (red, yellow, green)] == ["k", "j", "i"]
    matrix = node_ijk_to_ras(volume)
    for node, axis, index in ((red, "k", 5), (yellow, "j", 30), (green, "i", 2), (red, "k", 31), (red, "k", 0)):
        ijk = np.array([7.0, 9.0, 11.0, 1.0])
        ijk["ijk".index(axis)] = index
        node.JumpSliceByOffsetting(*(matrix @ ijk)[:3])
        assert slice_in_view(node, volume) == SliceRef(axis, index)


def test_the_index_is_the_nearest_voxel_centre_and_rejects_outside_slices(env, tmp_path):
    volume = load(env, make_phantom(), tmp_path / "v.nrrd")  # identity direction: k spacing 1.5 mm along S
    red = env.slice_views()[0]
    origin_s = node_ijk_to_ras(volume)[2, 3]
    red.SetSliceOffset(origin_s + 1.5 * 10 + 0.7)  # 0.47 voxel above slice 10
    assert slice_in_view(red, volume) == SliceRef("k", 10)
    red.SetSliceOffset(origin_s + 1.5 * 10 + 0.76)  # 0.51 voxel: slice 11
    assert slice_in_view(red, volume) == SliceRef("k", 11)
    red.SetSliceOffset(origin_s - 1.5)
    with pytest.raises(InputError, match=r"the Red view shows slice k:-1, outside Phantom \(k runs 0..31\)"):
        slice_in_view(red, volume)


def test_a_volume_under_a_transform_is_followed_in_world_coordinates(env, tmp_path):
    import vtk

    volume = load(env, make_phantom(), tmp_path / "v.nrrd")
    transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(2, 3, 15.0)  # 10 slices of 1.5 mm up
    transform.SetMatrixTransformToParent(shift)
    red = env.slice_views()[0]
    red.SetSliceOffset(node_ijk_to_ras(volume)[2, 3] + 1.5 * 12)
    assert slice_in_view(red, volume) == SliceRef("k", 12)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    assert slice_in_view(red, volume) == SliceRef("k", 2)


def test_show_slice_rotates_a_view_when_none_follows_the_axis(env, tmp_path):
    volume = load(env, make_phantom(direction=OBLIQUE), tmp_path / "v.nrrd")
    red = env.slice_views()[0]
    red.SetOrientation("Axial")
    assert closest_axis(red, volume)[0] == "k"
    assert show_slice([red], volume, SliceRef("i", 17)) is red
    assert closest_axis(red, volume) == ("i", 0.0)
    assert slice_in_view(red, volume) == SliceRef("i", 17)
    with pytest.raises(InputError, match="slice i:40 is outside"):
        show_slice([red], volume, SliceRef("i", 40))


# -- the marked list ---------------------------------------------------------------------------


def test_marked_slices_are_a_canonical_node_attribute(env, tmp_path):
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    node = labels_to_segmentation_node(env.scene, labels, [LabelInfo(1, "A", (1, 2, 3))], "annotation", volume)
    assert marked_slices(node) == []
    mark_slice(node, SliceRef("k", 40))
    mark_slice(node, SliceRef("j", 100))
    mark_slice(node, SliceRef("k", 4))
    mark_slice(node, SliceRef("k", 40))  # twice: listed once
    assert node.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE) == "j:100;k:4,40"
    assert unmark_slice(node, SliceRef("k", 40)) == [SliceRef("j", 100), SliceRef("k", 4)]
    assert node.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE) == "j:100;k:4"
    assert set_marked_slices(node, []) == [] and node.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE) == ""
    assert parse_slices("k:40,60; j:100") == [SliceRef("j", 100), SliceRef("k", 40), SliceRef("k", 60)]
    assert format_slices(parse_slices("k:60,40;i:3")) == "i:3;k:40,60"
    with pytest.raises(InputError, match="cannot read 'axial:3'"):
        parse_slices("axial:3")


# -- engine output -----------------------------------------------------------------------------


def test_engine_output_is_parsed_into_model_dice_and_suggestions():
    lines = [
        "trained from tiny 0.0.1 for 12 steps in 9 s (step limit)",
        "held-out slice k:16: mean Dice 0.812",
        "saved model liver version 2 in /home/u/MedSeg/models/liver-v2",
        "slices to annotate next (least certain first):",
        "  i: 0 (1.00), 24 (0.75)",
        "  j: none",
        "  k: 30 (0.90)",
        json.dumps({"result": {"model": "liver", "structure_choices": {"Liver, left lobe": "growing", "Tumour": "network"}}}),
    ]
    report = parse_finetune_output(lines)
    assert report.structure_choices == {"Liver, left lobe": "growing", "Tumour": "network"}
    assert report.describe_choices() == "Liver, left lobe: growing, Tumour: network"
    assert (report.model_name, report.model_version, report.model_folder) == ("liver", "2", "/home/u/MedSeg/models/liver-v2")
    assert (report.held_out, report.held_out_dice) == ("k:16", 0.812)
    assert report.suggestions == {"i": [(0, 1.0), (24, 0.75)], "j": [], "k": [(30, 0.9)]}
    assert ordered_suggestions(report.suggestions, [SliceRef("i", 0)]) == [SliceRef("k", 30), SliceRef("i", 24)]
    as_json = json.dumps({"i": [{"index": 0, "score": 1.0}], "k": [{"index": 30, "score": 0.9}]})
    assert parse_suggestions_json(as_json) == {"i": [(0, 1.0)], "k": [(30, 0.9)]}
    progress = parse_training_progress("step 12, loss 0.532, ~98 s left")
    assert (progress.step, progress.loss, progress.seconds_left) == (12, 0.532, 98)
    assert progress.describe() == "step 12 · loss 0.532 · about 98 s left"
    assert parse_training_progress("window batch 3/27") is None
    with pytest.raises(InputError, match="without saying where it saved"):
        parse_finetune_output(lines[:2])
    assert default_model_name("CT chest (2)") == "CT-chest-2-sparse"


# -- end to end --------------------------------------------------------------------------------


def test_sparse_annotation_workflow(env, tc, tmp_path):
    self_test.check_sparse_annotation(tc, env.scene, env.load_volume, tmp_path, env.slice_views())


def test_sparse_bad_inputs_raise_one_line_errors(env, tc, tmp_path):
    self_test.check_sparse_bad_inputs(tc, env.scene, env.load_volume, tmp_path, env.slice_views())


def test_cancel_at_any_moment_leaves_scene_and_annotation_intact(env, tc, tmp_path):
    self_test.check_sparse_cancel(tc, env.scene, env.load_volume, tmp_path)


def test_full_loop_with_registry_model_from_the_environment(env, registry_env, tmp_path):
    """The fixture model found by name through MEDSEG_BUNDLED_MODELS; the user model lands in
    MEDSEG_HOME; a second run never overwrites the first (name-v2)."""
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (10, 20), (18,))
    set_marked_slices(annotation, parse_slices("k:10,20;j:18"))
    before = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    outcomes = []
    for _ in range(2):
        run = SparseRun(env.scene, volume, annotation, SparseSettings("phantom-sparse", base_model="tiny-test", max_steps=2,
                                                                      device="cpu"))
        outcomes.append(run.run(timeout=300))
    first, second = outcomes
    home = tmp_path / "home" / "models"
    assert first.prediction_node.GetAttribute("MedSeg.ModelFolder") == str(home / "phantom-sparse")
    assert second.prediction_node.GetAttribute("MedSeg.ModelFolder") == str(home / "phantom-sparse-v2")
    assert second.report.model_version == "2"
    assert first.prediction_node is not second.prediction_node
    assert second.prediction_node.GetName() == "Phantom phantom-sparse prediction_1"  # unique, never a reuse
    assert [s.GetName() for _i, s in segments(first.prediction_node)] == ["Left blob", "Right blob", "Body"]
    assert np.array_equal(sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0]), before)
    # Save model as: refused for a bundled model's name, never overwrites, copies verify.
    with pytest.raises(ModelError, match="taken by a bundled model"):
        save_model_as(home / "phantom-sparse", "tiny-test")
    assert save_model_as(home / "phantom-sparse", "phantom-sparse").folder == home / "phantom-sparse-v3"


def test_copy_needs_matching_names_and_only_writes_outside_marked_slices(env, tmp_path):
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (8,), ())
    set_marked_slices(annotation, [SliceRef("k", 8)])
    shape = image.GetSize()[::-1]
    predicted = np.zeros(shape, np.uint8)
    predicted[:, 10:20, 10:20] = 5  # crosses the marked slice k:8
    labels = sitk.GetImageFromArray(predicted)
    labels.CopyInformation(image)
    other_names = labels_to_segmentation_node(env.scene, labels, [LabelInfo(5, "Kidney", (1, 1, 1))], "other", volume)
    with pytest.raises(InputError, match="no segment of 'other' has the name of a segment of 'My annotation'"):
        copy_prediction_into_annotation(annotation, other_names, volume)
    before = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    prediction = labels_to_segmentation_node(env.scene, labels, [LabelInfo(5, "Body", (1, 1, 1))], "prediction", volume)
    report = copy_prediction_into_annotation(annotation, prediction, volume)
    after = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    assert report.copied == ["Body"]
    assert np.array_equal(after[8], before[8])  # the marked slice, byte for byte
    outside = np.ones(shape, bool)
    outside[8] = False
    assert np.array_equal((after == 3)[outside], (predicted == 5)[outside])  # Body outside = prediction
    assert np.count_nonzero(after == 4) == 8  # Tumour (k 1..2, untouched by the box) kept
    assert report.changed_voxels == int(np.count_nonzero(after != before))
    with pytest.raises(InputError, match="same segmentation"):
        copy_prediction_into_annotation(annotation, annotation, volume)


def test_the_engine_command_follows_the_settings(env, registry_env, tmp_path):
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (16, 8), ())
    set_marked_slices(annotation, [SliceRef("k", 16), SliceRef("k", 8)])

    def args(**options) -> list[str]:
        folder = tmp_path / f"work{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        return SparseRun(env.scene, volume, annotation, SparseSettings("m", **options)).write_inputs(folder)

    base = args(base_model="tiny-test", time_budget=45.0, max_steps=7, device="cpu")
    assert base[:2] == ["finetune", base[1]] and base[1].endswith("input.nrrd")
    assert base[base.index("--slices") + 1] == "k:8,16"
    assert base[base.index("--model") + 1] == str(registry_env)
    assert base[base.index("--time-budget") + 1] == "45" and base[base.index("--max-steps") + 1] == "7"
    assert base[base.index("--device") + 1] == "cpu" and base[base.index("--progress") + 1] == "json"
    scratch = args(base_model="tiny-test", from_scratch=True)
    assert "--from-scratch" in scratch and "--model" not in scratch and "--time-budget" not in scratch
    default = args()
    assert "--from-scratch" not in default and "--model" not in default  # the engine's default model
    labels = default[default.index("--labels") + 1]
    from MedSegExtension.io.segmentation_files import read_labelmap

    written, info = read_labelmap(labels)
    assert [(i.value, i.name) for i in info] == [(1, "Left blob"), (2, "Right blob"), (3, "Body")]  # Tumour dropped
    assert 4 not in np.unique(sitk.GetArrayViewFromImage(written))
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        SparseRun(env.scene, volume, annotation, SparseSettings("m", base_model="nope"))


def test_annotation_and_prediction_must_share_the_volumes_transform(env, tmp_path):
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (8,), ())
    set_marked_slices(annotation, [SliceRef("k", 8)])
    prediction = self_test._painted_annotation(env.scene, image, volume, (9,), ())
    transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    prediction.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="prediction 'My annotation_1' and volume 'Phantom' are under different transforms"):
        copy_prediction_into_annotation(annotation, prediction, volume)
    annotation.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputError, match="annotation 'My annotation' and volume 'Phantom' are under different transforms"):
        SparseRun(env.scene, volume, annotation, SparseSettings("t", max_steps=1))


def test_no_node_is_added_when_the_volume_is_removed_during_the_run(env, registry_env, tmp_path):
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (10,), ())
    set_marked_slices(annotation, [SliceRef("k", 10)])
    run = SparseRun(env.scene, volume, annotation, SparseSettings("gone", base_model="tiny-test", max_steps=1, device="cpu"))
    run.start()
    env.scene.RemoveNode(volume)
    before = node_ids(env.scene)
    assert run.wait(timeout=300) == 0
    with pytest.raises(InputError, match="the volume was removed during fine-tuning"):
        run.finish()
    assert node_ids(env.scene) == before


def test_the_first_answer_is_shown_at_once_and_the_final_one_replaces_it(env, registry_env, tmp_path):
    """The engine writes its answer before training (--first-output); the run imports it as its own
    node while training goes on, and removes it when the fine-tuned prediction arrives."""
    image = make_phantom()
    volume = load(env, image, tmp_path / "v.nrrd")
    annotation = self_test._painted_annotation(env.scene, image, volume, (8, 12, 16), ())
    set_marked_slices(annotation, parse_slices("k:8,12,16"))
    run = SparseRun(env.scene, volume, annotation, SparseSettings("first", base_model="tiny-test", max_steps=3,
                                                                  device="cpu"))
    run.start()
    seen_while_running = None
    while not run.done:
        if any(event.kind == "first_answer" for event in run.poll()):
            seen_while_running = run.first_node
    run.poll()
    first = run.first_node or seen_while_running
    assert first is not None and first.GetName() == "Phantom first first answer"
    assert first.GetAttribute("MedSeg.FirstAnswer") == "true"
    labels = sitk.GetArrayFromImage(segmentation_to_labels(first, volume)[0])
    painted = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    assert np.array_equal(labels[8] > 0, painted[8] > 0)  # the drawn slice kept, the rest grown from it
    assert np.count_nonzero(labels[10]) > 0
    outcome = run.finish()
    assert not env.scene.IsNodePresent(first) and run.first_node is None
    assert env.scene.IsNodePresent(outcome.prediction_node)
