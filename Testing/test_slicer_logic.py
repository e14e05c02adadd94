"""The Slicer module's logic on real MRML scenes from the ``slicer-core`` wheel (no application).

The end-to-end checks are the ones ``MedSegModuleTest`` runs inside Slicer
(``MedSegModule/MedSegModuleLib/self_test.py``); the rest pin down the pieces.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicer  # the slicer-core wheel
import vtk
from conftest import REPO, make_phantom
from MedSegModuleLib import engine_root, self_test
from MedSegModuleLib.background_task import BackgroundTask, parse_line
from MedSegModuleLib.dependencies import (
    PROTECTED_PACKAGES,
    Requirement,
    constraints_text,
    install_plan,
    missing_requirements,
    read_requirements,
)
from MedSegModuleLib.headless import create_scene
from MedSegModuleLib.model_catalog import device_argument, list_models
from MedSegModuleLib.scene_guard import node_ids
from MedSegModuleLib.segmentation_logic import SegmentationRun, SegmentationSettings, run_segmentation
from MedSegModuleLib.segmentation_nodes import (
    import_segmentation_file,
    labels_to_segmentation_node,
    place_beside,
    segment_label_value,
    segment_terminology,
    segment_volumes,
    segmentation_to_labels,
    segments,
    terminology_entry,
)
from MedSegModuleLib.transform_nodes import load_itk_transform, to_parent_matrix
from MedSegModuleLib.volume_conversion import (
    check_scalar_volume,
    ijk_to_ras_matrix,
    node_ijk_to_ras,
    sitk_to_volume_node,
    volume_node_to_sitk,
)
from slicerio.segmentation import terminology_entry_from_string

from MedSegExtension.errors import CancelledError, InputError
from MedSegExtension.inference.devices import DeviceReport
from MedSegExtension.models.card import LabelInfo

OBLIQUE = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def write(image: sitk.Image, path: Path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


# -- volume node <-> SimpleITK -----------------------------------------------------------------


def test_volume_read_by_slicer_converts_to_the_same_sitk_image(env, tmp_path):
    image = make_phantom(direction=OBLIQUE)
    node = env.load_volume(write(image, tmp_path / "oblique.nrrd"), "oblique")
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    expected_ijk_to_ras = flip @ np.array(
        [[0, 1.0, 0, -20.0], [1.2, 0, 0, 10.0], [0, 0, -1.5, 5.0], [0, 0, 0, 1]]
    )
    np.testing.assert_allclose(node_ijk_to_ras(node), expected_ijk_to_ras, atol=1e-9)
    np.testing.assert_allclose(ijk_to_ras_matrix(image), expected_ijk_to_ras, atol=1e-9)
    back = volume_node_to_sitk(node)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-9)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-9)


def test_sitk_image_written_by_slicer_reads_back_identically(env, tmp_path):
    image = sitk.Cast(make_phantom(direction=OBLIQUE) * 10, sitk.sitkInt16)
    before = node_ids(env.scene)
    node = sitk_to_volume_node(env.scene, image, "from sitk")
    assert len(node_ids(env.scene) - before) == 2  # volume + display node
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "written.nrrd"))
    assert storage.WriteData(node)
    read = sitk.ReadImage(str(tmp_path / "written.nrrd"))
    assert read.GetPixelID() == sitk.sitkInt16
    assert np.array_equal(sitk.GetArrayViewFromImage(read), sitk.GetArrayViewFromImage(image))
    np.testing.assert_allclose(read.GetOrigin(), image.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(read.GetDirection(), image.GetDirection(), atol=1e-6)


def test_world_geometry_includes_the_parent_transform(env, tmp_path):
    image = make_phantom()
    node = env.load_volume(write(image, tmp_path / "v.nrrd"), "v")
    transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 7.0)  # 7 mm to patient right (RAS x)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    local, world = volume_node_to_sitk(node), volume_node_to_sitk(node, world=True)
    np.testing.assert_allclose(local.GetOrigin(), image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(np.subtract(world.GetOrigin(), local.GetOrigin()), (-7.0, 0.0, 0.0), atol=1e-9)  # LPS x = -R


def test_results_go_under_the_inputs_transform_and_folder(env, tmp_path):
    volume = env.load_volume(write(make_phantom(), tmp_path / "v.nrrd"), "v")
    transform = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    hierarchy = env.scene.GetSubjectHierarchyNode()
    folder = hierarchy.CreateFolderItem(hierarchy.GetSceneItemID(), "Patient 1")
    hierarchy.CreateItem(folder, volume)
    labels = sitk.Image(make_phantom().GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(make_phantom())
    seg = labels_to_segmentation_node(env.scene, labels, [LabelInfo(1, "A", (1, 2, 3))], "s", volume)
    place_beside(seg, volume)
    assert seg.GetTransformNodeID() == transform.GetID()
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(seg)) == folder


def test_only_3d_scalar_volumes_are_accepted(env, tmp_path):
    labelmap = env.load_volume(write(sitk.Cast(make_phantom() > 50, sitk.sitkUInt8), tmp_path / "l.nrrd"), "labels", labelmap=True)
    with pytest.raises(InputError, match="is a label map"):
        check_scalar_volume(labelmap)
    vector = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.float32), isVector=True)
    with pytest.raises(InputError, match="3 values per voxel"):
        check_scalar_volume(sitk_to_volume_node(env.scene, vector, "rgb", "vtkMRMLVectorVolumeNode"))
    with pytest.raises(InputError, match="has no voxels"):
        check_scalar_volume(env.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty"))
    with pytest.raises(InputError, match="no input volume selected"):
        check_scalar_volume(None)
    before = node_ids(env.scene)
    with pytest.raises(InputError, match="expected a 3D image"):
        sitk_to_volume_node(env.scene, sitk.Image([4, 4, 4, 2], sitk.sitkFloat32), "4D")
    assert node_ids(env.scene) == before


# -- label maps, segmentation nodes, .seg.nrrd -------------------------------------------------


def test_terminology_entry_is_what_slicer_and_slicerio_read():
    terminology = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"],
                   "modifier": ["SCT", "7771000", "Left"]}
    entry = terminology_entry(terminology)
    decoded = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry, decoded)
    assert decoded.GetTypeObject().GetCodeMeaning() == "Liver"
    assert decoded.GetTypeModifierObject().GetCodeValue() == "7771000"
    parsed = terminology_entry_from_string(entry)
    assert parsed["category"] == terminology["category"]
    assert parsed["type"] == terminology["type"]
    assert parsed["typeModifier"] == terminology["modifier"]
    assert entry.split("~")[0] == "Segmentation category and type - 3D Slicer General Anatomy list"
    assert terminology_entry(None) is None
    with pytest.raises(InputError, match="needs both 'category' and 'type'"):
        terminology_entry({"category": terminology["category"]})


def test_label_map_to_segmentation_node_and_back(env, tmp_path):
    image = make_phantom(direction=OBLIQUE)
    volume = env.load_volume(write(image, tmp_path / "v.nrrd"), "v")
    array = np.zeros(image.GetSize()[::-1], np.uint8)
    array[2:6, 3:9, 4:8] = 3  # 4*6*4 = 96 voxels
    array[10:12, 10:12, 10:12] = 7  # 8 voxels
    array[20, 20, 20] = 9  # a value the card does not name
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    liver = {"category": ["SCT", "123037004", "Anatomical Structure"], "type": ["SCT", "10200004", "Liver"]}
    card = [LabelInfo(3, "Liver", (200, 100, 50), liver), LabelInfo(7, "Spleen", (10, 20, 250)), LabelInfo(8, "Kidney", (1, 2, 3))]
    node = labels_to_segmentation_node(env.scene, labels, card, "seg", volume)
    named = [(s.GetName(), segment_label_value(s), tuple(round(255 * c) for c in s.GetColor())) for _i, s in segments(node)]
    assert named == [("Liver", 3, (200, 100, 50)), ("Spleen", 7, (10, 20, 250)), ("Kidney", 8, (1, 2, 3)),
                     ("Label 9", 9, (128, 128, 128))]
    assert segment_terminology(segments(node)[0][1]) == terminology_entry(liver)
    assert [(v.name, v.voxels) for v in segment_volumes(node)] == [("Liver", 96), ("Spleen", 8), ("Kidney", 0), ("Label 9", 1)]
    assert segment_volumes(node)[0].millilitres == pytest.approx(96 * 1.2 * 1.0 * 1.5 / 1000)
    back, infos = segmentation_to_labels(node, volume)
    assert np.array_equal(sitk.GetArrayViewFromImage(back), array)
    np.testing.assert_allclose(back.GetDirection(), OBLIQUE, atol=1e-9)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-6)
    assert [(i.value, i.name) for i in infos] == [(3, "Liver"), (7, "Spleen"), (8, "Kidney"), (9, "Label 9")]


def test_bad_label_maps_and_files_add_no_nodes(env, tmp_path):
    before = node_ids(env.scene)
    with pytest.raises(InputError, match="must be integers"):
        labels_to_segmentation_node(env.scene, make_phantom(), [], "float labels")
    (tmp_path / "broken.seg.nrrd").write_bytes(b"NRRD0004\ntype: nonsense\n\n")
    with pytest.raises(InputError, match="cannot read this file as a segmentation"):
        import_segmentation_file(env.scene, tmp_path / "broken.seg.nrrd", "broken")
    with pytest.raises(InputError, match="no such segmentation file"):
        import_segmentation_file(env.scene, tmp_path / "missing.seg.nrrd", "missing")
    assert node_ids(env.scene) == before


# -- transforms --------------------------------------------------------------------------------


def test_itk_snap_transform_shows_the_volume_as_simpleitk_resamples_it(env, tc, tmp_path):
    self_test.check_itk_snap_transform(tc, env.scene, env.load_volume, tmp_path,
                                       slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume)


def test_engine_reader_agrees_with_slicers_reader_where_slicer_can_read(env, tmp_path):
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((0.98, -0.17, 0.0, 0.17, 0.98, 0.0, 0.0, 0.0, 1.0))
    affine.SetTranslation((3.0, -2.0, 1.0))
    affine.SetCenter((0.0, 15.0, 0.0))
    sitk.WriteTransform(affine, str(tmp_path / "affine.tfm"))
    ours = load_itk_transform(env.scene, tmp_path / "affine.tfm")
    theirs = env.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    storage = slicer.vtkMRMLTransformStorageNode()
    storage.SetFileName(str(tmp_path / "affine.tfm"))
    assert storage.ReadData(theirs)
    np.testing.assert_allclose(to_parent_matrix(ours), to_parent_matrix(theirs), atol=1e-9)
    assert ours.GetName() == "affine"


# -- the engine in a subprocess ----------------------------------------------------------------


def test_segmentation_workflow(env, tc, tmp_path):
    self_test.check_segmentation_workflow(tc, env.scene, env.load_volume, tmp_path)


def test_bad_inputs_raise_one_line_errors_and_add_no_nodes(env, tc, tmp_path):
    self_test.check_bad_inputs(tc, env.scene, env.load_volume, tmp_path)


def test_cancel_stops_the_engine_and_adds_no_nodes(env, tc, tmp_path):
    self_test.check_cancel(tc, env.scene, env.load_volume, tmp_path)


@pytest.mark.skipif(not self_test.heavy_requested(), reason="heavy: set MEDSEG_SELFTEST_HEAVY=1")
def test_cancel_while_tta_works_on_a_large_volume(env, tc, tmp_path):
    self_test.check_cancel(tc, env.scene, env.load_volume, tmp_path, heavy=True)


def test_engine_error_reaches_the_caller_and_adds_no_nodes(env, tmp_path, tiny_model_dir):
    constant = sitk.Image(20, 20, 20, sitk.sitkFloat32) + 5.0
    volume = env.load_volume(write(constant, tmp_path / "flat.nrrd"), "flat")
    before = node_ids(env.scene)
    run = SegmentationRun(env.scene, volume, SegmentationSettings(str(tiny_model_dir), device="cpu"))
    run.start()
    workdir = run.workdir
    assert run.task.wait(timeout=120) == 2
    with pytest.raises(InputError) as caught:
        run.finish()
    assert "every voxel has the value 5" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert node_ids(env.scene) == before
    assert not Path(workdir).exists()


def test_run_segmentation_cancelled_at_once_adds_nothing(env, tmp_path, tiny_model_dir):
    volume = env.load_volume(write(make_phantom(), tmp_path / "v.nrrd"), "v")
    before = node_ids(env.scene)
    t0 = time.monotonic()
    with pytest.raises(CancelledError, match="nothing was added"):
        run_segmentation(env.scene, volume, SegmentationSettings(str(tiny_model_dir)), should_cancel=lambda: True)
    assert time.monotonic() - t0 < 15
    assert node_ids(env.scene) == before


def test_a_volume_from_another_scene_is_refused(env, tmp_path, tiny_model_dir):
    other = create_scene()
    volume = other.load_volume(write(make_phantom(), tmp_path / "v.nrrd"), "v")
    with pytest.raises(InputError, match="not in this scene"):
        run_segmentation(env.scene, volume, SegmentationSettings(str(tiny_model_dir)))


# -- background task ---------------------------------------------------------------------------


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_task_reports_progress_logs_and_exit_code():
    code = (
        "import sys, json\n"
        "print(json.dumps({'progress': 0.25, 'message': 'window 1/4'}), file=sys.stderr)\n"
        "print(json.dumps({'log': 'model x on cpu'}), file=sys.stderr)\n"
        "print('wrote out.seg.nrrd')\n"
        "print(json.dumps({'progress': 1.0, 'message': 'done'}), file=sys.stderr)\n"
    )
    task = BackgroundTask(python(code))
    task.start()
    events = []
    deadline = time.monotonic() + 30
    while not task.done and time.monotonic() < deadline:
        events += task.poll()
        time.sleep(0.02)
    events += task.poll()
    assert task.returncode == 0
    progress = [(e.fraction, e.message) for e in events if e.kind == "progress"]
    assert progress == [(0.25, "window 1/4"), (1.0, "done")]
    logs = {e.message for e in events if e.kind == "log"}
    assert logs == {"model x on cpu", "wrote out.seg.nrrd"}
    assert task.fraction == 1.0 and task.message == "done"


def test_task_error_message_is_the_engines_one_line():
    code = "import sys\nprint('loading', file=sys.stderr)\nprint('medseg: error: a.nrrd: bad header', file=sys.stderr)\nsys.exit(2)"
    task = BackgroundTask(python(code))
    task.start()
    assert task.wait(timeout=30) == 2
    assert task.error_message() == "a.nrrd: bad header"


def test_poll_does_not_block_and_cancel_stops_a_busy_process():
    task = BackgroundTask(python("import time\nprint('started', flush=True)\ntime.sleep(60)"))
    task.start()
    while "started" not in task.lines:
        task.poll()
        time.sleep(0.02)
    t0 = time.monotonic()
    assert task.poll() == []
    assert time.monotonic() - t0 < 0.05
    assert not task.done
    task.cancel()
    assert task.wait(timeout=10) is not None
    assert task.cancel_requested
    assert time.monotonic() - t0 < 10


@pytest.mark.skipif(os.name == "nt", reason="signal escalation is POSIX only")
def test_cancel_escalates_to_kill_when_sigterm_is_ignored():
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(60)"
    task = BackgroundTask(python(code), grace=0.3)
    task.start()
    while "ready" not in task.lines:
        task.poll()
        time.sleep(0.02)
    task.cancel()
    assert task.wait(timeout=10) == -signal.SIGKILL


def test_parse_line_handles_every_kind_of_line():
    assert parse_line('{"progress": 1.7, "message": "x"}\n').fraction == 1.0
    assert parse_line('{"log": "hello"}').message == "hello"
    assert parse_line("{not json").kind == "log"
    assert parse_line("plain text\n").message == "plain text"


# -- dependencies, models, devices, engine path ------------------------------------------------


def test_requirements_never_touch_slicers_own_packages():
    projects = [req.project.lower() for req in read_requirements()]
    assert "monai" in projects and "slicerio" in projects
    assert not {p.lower() for p in PROTECTED_PACKAGES} & set(projects)
    assert "torch" not in projects  # through the PyTorch extension, first


def test_missing_requirements_lists_torch_first():
    missing = missing_requirements(find_spec=lambda name: None if name in {"torch", "yaml"} else object())
    assert [req.project for req in missing] == ["torch", "pyyaml"]
    assert missing[1].import_name == "yaml"
    assert missing_requirements() == []  # this environment has everything
    old_torch = missing_requirements(find_spec=lambda name: object(), version_of=lambda p: "1.13.1" if p == "torch" else None)
    assert [req.spec for req in old_torch] == ["torch>=2.1,<3"]
    plan = install_plan([Requirement("torch>=2.1,<3")], pytorch_extension=True)
    assert "PyTorch extension" in plan[0] and "numpy" in plan[-1]


def test_constraints_pin_slicers_numpy_and_the_torch_present():
    import torch

    pins = constraints_text().splitlines()
    assert f"numpy=={np.__version__}" in pins
    assert f"torch=={torch.__version__}" in pins  # MONAI's install must not replace it


def test_model_catalog_lists_models_and_reports_broken_cards(tmp_path, tiny_model_dir):
    broken = tmp_path / "user" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{ not json")
    catalog = list_models([tiny_model_dir], bundled=tmp_path / "none", user=tmp_path / "user")
    assert [(c.card.name, c.source) for c in catalog.models] == [("tiny-test", "folder")]
    assert len(catalog.problems) == 1 and "broken" in catalog.problems[0]
    choice = catalog.find(str(tiny_model_dir))
    assert "Left blob, Right blob, Body" in choice.summary()
    assert catalog.find("tiny-test") is choice


def test_device_choices_map_to_engine_devices():
    cpu_only = DeviceReport(False, None, False, "no GPU found: this PyTorch is a CPU-only build; running on the CPU")
    assert device_argument("auto", cpu_only) == "auto"
    assert device_argument("cpu", cpu_only) == "cpu"
    with pytest.raises(InputError, match="GPU requested but no GPU found"):
        device_argument("gpu", cpu_only)
    assert device_argument("gpu", DeviceReport(True, "H100", False, "GPU: H100")) == "cuda"
    assert device_argument("gpu", DeviceReport(False, None, True, "GPU: Apple Metal (MPS)")) == "mps"


def test_engine_is_found_beside_the_module_in_a_source_checkout():
    assert engine_root() == REPO
