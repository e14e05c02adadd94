"""The module's end-to-end checks, written once for ``MedSegModuleTest`` (inside Slicer, on
``slicer.mrmlScene``) and for the headless CI tests (a ``slicer-core`` scene).

Each check takes a ``unittest.TestCase`` for its assertions, the scene, a function that loads a
volume file with Slicer's reader, and a scratch folder. The data are made on the spot: a
phantom volume written to NRRD, and a small model with random weights (real card, real
weights file with its sha256) saved with the engine's own :func:`save_model`.

:func:`selected_checks` is what ``MedSegModuleTest`` runs: quick by default (seconds each; a
cancel right after the start), the heavy checks (cancel in the middle of test-time augmentation
on a 120×120×96 volume) only with ``MEDSEG_SELFTEST_HEAVY=1``. Whether the checks can run at all
is :func:`.dependencies.self_test_skip_reason` (this file needs torch, numpy and SimpleITK).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import unittest
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from MedSegExtension.errors import CancelledError, InputError, ModelError
from MedSegExtension.io.segmentation_files import read_labelmap
from MedSegExtension.models.card import LabelInfo
from MedSegExtension.sparse.annotations import SliceRef

from .evaluation import EvaluationRun, table_rows
from .scene_guard import node_ids
from .segmentation_logic import SegmentationRun, SegmentationSettings
from .segmentation_nodes import (
    import_segmentation_file,
    labels_to_segmentation_node,
    save_segmentation,
    segment_label_value,
    segment_terminology,
    segment_volumes,
    segmentation_to_labels,
    segments,
    terminology_entry,
)
from .slice_views import show_slice, slice_in_view, voxel_centre_ras
from .sparse_annotation import SparseRun, SparseSettings
from .sparse_copy import copy_prediction_into_annotation, save_model_as
from .sparse_report import ordered_suggestions, stored_suggestions
from .sparse_slices import (
    ANNOTATED_SLICES_ATTRIBUTE,
    known_mask,
    mark_slice,
    mark_slice_in_view,
    marked_slices,
    set_marked_slices,
)
from .transform_nodes import harden_transform, itk_euler_angles, load_itk_transform
from .volume_conversion import node_ijk_to_ras, sitk_to_volume_node, volume_node_to_sitk

VolumeLoader = Callable[[str, str], Any]
HEAVY_ENV = "MEDSEG_SELFTEST_HEAVY"
TISSUE = {"category": ["SCT", "85756007", "Tissue"], "type": ["SCT", "85756007", "Tissue"]}


def phantom(size=(40, 36, 32), spacing=(1.2, 1.0, 1.5), origin=(-20.0, 10.0, 5.0), direction=None, seed=0) -> sitk.Image:
    """An ellipsoid with two bright blobs and noise, float32, with non-trivial geometry."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in size[::-1]), indexing="ij")
    array = 100.0 * ((i**2 + j**2 + k**2) < 0.8) + rng.normal(0, 5, size[::-1])
    array += 200.0 * (((i - 0.35) ** 2 + j**2 + k**2) < 0.05)
    array += 300.0 * (((i + 0.35) ** 2 + j**2 + k**2) < 0.05)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction or (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    return image


def make_tiny_model(folder: Path, name: str = "selftest-tiny") -> Path:
    """A complete model folder with random weights (4/8 channels, 16³ windows)."""
    import torch

    from MedSegExtension.models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
    from MedSegExtension.models.registry import save_model
    from MedSegExtension.networks import build_network

    card = ModelCard(
        name=name, version="0.0.1", description="Random weights, for the module self-test.", modality="any",
        input_channels=1,
        labels=[LabelInfo(1, "Left blob", (230, 80, 80), TISSUE), LabelInfo(2, "Right blob", (80, 80, 230)),
                LabelInfo(5, "Body", (80, 200, 80))],
        target_spacing=(2.0, 2.0, 2.0), window_size=(16, 16, 16),
        normalization=Normalization("percentile", 0.5, 99.5), network=NetworkConfig(channels=(4, 8)),
    )
    torch.manual_seed(0)
    save_model(card, build_network(1, card.num_classes, card.network), folder / name)
    return folder / name


def _write(image: sitk.Image, path: Path) -> str:
    sitk.WriteImage(image, str(path))
    return str(path)


def check_segmentation_workflow(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path) -> Any:
    """Real volume -> engine -> new segmentation node: names, colours, terminology, geometry,
    provenance, subject hierarchy, uncertainty map, volumes, label export, .seg.nrrd round trip."""
    model = make_tiny_model(workdir)
    image = phantom()
    volume = load_volume(_write(image, workdir / "phantom.nrrd"), "Phantom")
    mine = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    mine.CopyInformation(image)
    mine[5:9, 5:9, 5:9] = 1
    user_node = labels_to_segmentation_node(scene, mine, [LabelInfo(1, "Mine", (10, 20, 30))], "My work", volume)
    before = node_ids(scene)
    run = SegmentationRun(scene, volume, SegmentationSettings(str(model), device="cpu", uncertainty=True))
    run.start()
    tc.assertIsNotNone(run.task.wait(timeout=300))
    engine_file = shutil.copy(run.output_path, workdir / "engine.seg.nrrd")  # the engine's own output, kept
    outcome = run.finish()
    seg = outcome.segmentation_node
    added = [scene.GetNodeByID(node_id) for node_id in node_ids(scene) - before]
    data = {n.GetID() for n in added if not n.IsA("vtkMRMLDisplayNode") and not n.IsA("vtkMRMLStorageNode")}
    tc.assertEqual(data, {seg.GetID(), outcome.uncertainty_node.GetID()})  # only added, and only these
    tc.assertIsNot(seg, user_node)  # the user's segmentation is never reused or overwritten
    tc.assertEqual([(s.GetName(), v.voxels) for (_i, s), v in zip(segments(user_node), segment_volumes(user_node))], [("Mine", 64)])
    tc.assertTrue(seg.GetName().startswith("Phantom selftest-tiny"))
    tc.assertEqual([s.GetName() for _i, s in segments(seg)], ["Left blob", "Right blob", "Body"])
    tc.assertEqual([segment_label_value(s) for _i, s in segments(seg)], [1, 2, 5])
    colours = [tuple(round(c * 255) for c in s.GetColor()) for _i, s in segments(seg)]
    tc.assertEqual(colours, [(230, 80, 80), (80, 80, 230), (80, 200, 80)])
    tc.assertEqual(segment_terminology(segments(seg)[0][1]), terminology_entry(TISSUE))
    tc.assertEqual(seg.GetAttribute("MedSeg.Model"), "selftest-tiny")
    tc.assertEqual(seg.GetAttribute("MedSeg.ModelVersion"), "0.0.1")
    card = json.loads((model / "model.json").read_text())
    tc.assertEqual(seg.GetAttribute("MedSeg.ModelSHA256"), card["sha256"])
    tc.assertEqual(seg.GetAttribute("MedSeg.Device"), "cpu")
    tc.assertEqual(json.loads(seg.GetAttribute("MedSeg.Settings")), {"device": "cpu", "tta": False, "uncertainty": True})
    tc.assertTrue(seg.GetAttribute("MedSeg.Time"))

    # Geometry: the exported label map sits exactly on the input grid and equals the engine's file
    # (read with the engine's own reader, not Slicer's).
    labels, infos = segmentation_to_labels(seg, volume)
    engine_labels, _ = read_labelmap(engine_file)
    tc.assertTrue(np.array_equal(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(engine_labels)))
    np.testing.assert_allclose(engine_labels.GetOrigin(), image.GetOrigin(), atol=1e-4)
    tc.assertEqual(labels.GetSize(), image.GetSize())
    np.testing.assert_allclose(labels.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(labels.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(labels.GetSpacing(), image.GetSpacing(), atol=1e-6)
    tc.assertEqual([info.value for info in infos], [1, 2, 5])
    values, counts = np.unique(sitk.GetArrayViewFromImage(labels), return_counts=True)
    tc.assertTrue(set(values.tolist()) <= {0, 1, 2, 5})
    by_name = {v.name: v for v in segment_volumes(seg)}
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    for value, name in ((1, "Left blob"), (2, "Right blob"), (5, "Body")):
        count = int(counts[values == value].sum())
        tc.assertEqual(by_name[name].voxels, count)
        tc.assertAlmostEqual(by_name[name].millilitres, count * voxel_ml, places=6)

    # Beside the input in the subject hierarchy.
    hierarchy = scene.GetSubjectHierarchyNode()
    parent_of = lambda node: hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node))  # noqa: E731
    tc.assertEqual(parent_of(seg), parent_of(volume))

    # Uncertainty: a volume on the input grid with values in [0, 1].
    uncertainty = volume_node_to_sitk(outcome.uncertainty_node)
    tc.assertEqual(uncertainty.GetSize(), image.GetSize())
    array = sitk.GetArrayViewFromImage(uncertainty)
    tc.assertGreaterEqual(float(array.min()), 0.0)
    tc.assertLessEqual(float(array.max()), 1.0 + 1e-6)

    # .seg.nrrd round trip with Slicer's writer and reader; no overwriting.
    path = save_segmentation(seg, workdir / "saved.seg.nrrd")
    with tc.assertRaises(InputError):
        save_segmentation(seg, path)
    reloaded = import_segmentation_file(scene, path, "Reloaded")
    tc.assertEqual([s.GetName() for _i, s in segments(reloaded)], ["Left blob", "Right blob", "Body"])
    tc.assertEqual([segment_label_value(s) for _i, s in segments(reloaded)], [1, 2, 5])
    again, _ = segmentation_to_labels(reloaded, volume)
    tc.assertTrue(np.array_equal(sitk.GetArrayViewFromImage(again), sitk.GetArrayViewFromImage(labels)))
    return seg


def _expect_error(tc: unittest.TestCase, scene: Any, error: type, action: Callable[[], Any], fragment: str) -> None:
    before = node_ids(scene)
    with tc.assertRaises(error) as caught:
        action()
    message = str(caught.exception)
    tc.assertIn(fragment, message)
    tc.assertNotIn("\n", message)
    tc.assertEqual(node_ids(scene), before, "a failed operation left nodes in the scene")


def check_bad_inputs(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path) -> None:
    """Unsupported transform, 4D volume, unknown model, corrupted weights: one-line errors, no nodes."""
    model = make_tiny_model(workdir)
    volume = load_volume(_write(phantom(), workdir / "input.nrrd"), "Input")

    bspline = sitk.BSplineTransform(3, 3)
    bspline.SetTransformDomainOrigin((0.0, 0.0, 0.0))
    sitk.WriteTransform(bspline, str(workdir / "bspline.txt"))
    _expect_error(tc, scene, InputError, lambda: load_itk_transform(scene, workdir / "bspline.txt", volume), "bspline.txt")
    (workdir / "garbage.tfm").write_text("this is not a transform\n")
    _expect_error(tc, scene, InputError, lambda: load_itk_transform(scene, workdir / "garbage.tfm", volume), "garbage.tfm")
    tc.assertIsNone(volume.GetParentTransformNode())

    time_series = sitk.GetImageFromArray(np.random.default_rng(1).random((12, 10, 8, 3)).astype(np.float32), isVector=True)
    four_d = sitk_to_volume_node(scene, time_series, "TimeSeries", node_class="vtkMRMLVectorVolumeNode")
    settings = SegmentationSettings(str(model), device="cpu")
    _expect_error(tc, scene, InputError, lambda: SegmentationRun(scene, four_d, settings), "3 values per voxel")
    _expect_error(tc, scene, ModelError,
                  lambda: SegmentationRun(scene, volume, SegmentationSettings("no-such-model")), "unknown model 'no-such-model'")
    corrupt = workdir / "corrupt"
    shutil.copytree(model, corrupt)
    with open(corrupt / "model.pt", "ab") as stream:
        stream.write(b"\0")
    _expect_error(tc, scene, ModelError, lambda: SegmentationRun(scene, volume, SegmentationSettings(str(corrupt))), "sha256 mismatch")


def check_cancel(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path, heavy: bool = False) -> None:
    """Cancel (quick: right after the start; heavy: while TTA works on a large volume): the engine
    stops within seconds and the scene is unchanged."""
    model = make_tiny_model(workdir)
    size, spacing = ((120, 120, 96), (1.0, 1.0, 1.0)) if heavy else ((40, 36, 32), (1.2, 1.0, 1.5))
    volume = load_volume(_write(phantom(size=size, spacing=spacing), workdir / "large.nrrd"), "Large")
    before = node_ids(scene)
    run = SegmentationRun(scene, volume, SegmentationSettings(str(model), device="cpu", tta=True))
    run.start()
    workfolder = run.workdir
    cancelled_at = None
    if not heavy:
        run.cancel()
        cancelled_at = time.monotonic()
    deadline = time.monotonic() + 120
    while not run.done and time.monotonic() < deadline:
        events = run.poll()
        if cancelled_at is None and any(e.kind == "progress" and (e.fraction or 0.0) > 0.0 for e in events):
            run.cancel()
            cancelled_at = time.monotonic()
        time.sleep(0.05)
    tc.assertIsNotNone(cancelled_at, "the engine finished before it could be cancelled")
    tc.assertLess(time.monotonic() - cancelled_at, 10.0)
    with tc.assertRaises(CancelledError):
        run.finish()
    tc.assertEqual(node_ids(scene), before)
    tc.assertFalse(Path(workfolder).exists())


def check_itk_snap_transform(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path, resample: Callable[[Any, Any], Any]) -> None:
    """An ITK-SNAP ``MatrixOffsetTransformBase`` file shows the volume as SimpleITK resamples it.

    ``resample(volume, reference)`` resamples a volume node (through its parent transforms)
    onto a reference volume's grid, e.g. ``vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume``.
    """
    from MedSegExtension.transforms import itk_snap_text, read_transform

    image = phantom()  # oblique direction: LPS/RAS and direction mistakes would show
    volume = load_volume(_write(image, workdir / "moving.nrrd"), "Moving")
    reference = load_volume(_write(image, workdir / "reference.nrrd"), "Reference")
    angle = np.radians(20.0)
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((np.cos(angle), -np.sin(angle), 0.0, np.sin(angle), np.cos(angle), 0.0, 0.0, 0.0, 1.0))
    affine.SetTranslation((2.0, -3.0, 1.5))
    affine.SetCenter((4.0, 28.0, 28.0))
    path = workdir / "itksnap.txt"
    path.write_text(itk_snap_text(affine))
    tc.assertIn("MatrixOffsetTransformBase_double_3_3", path.read_text())
    transform = read_transform(path)

    node = load_itk_transform(scene, path, volume)
    tc.assertEqual(volume.GetTransformNodeID(), node.GetID())
    rx, ry, rz = itk_euler_angles(node)
    np.testing.assert_allclose((rx, ry, rz), (0.0, 0.0, 20.0), atol=1e-6)
    expected = sitk.GetArrayFromImage(sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0))
    shown = sitk.GetArrayFromImage(volume_node_to_sitk(resample(volume, reference)))
    np.testing.assert_allclose(shown, expected, atol=0.05)

    before = node_ijk_to_ras(volume, world=True)
    tc.assertTrue(harden_transform(volume))
    tc.assertIsNone(volume.GetParentTransformNode())
    np.testing.assert_allclose(node_ijk_to_ras(volume), before, atol=1e-9)
    hardened = sitk.GetArrayFromImage(volume_node_to_sitk(resample(volume, reference)))
    np.testing.assert_allclose(hardened, expected, atol=0.05)


# -- sparse annotation ---------------------------------------------------------------------------


def _painted_annotation(scene: Any, image: sitk.Image, volume: Any, marked_k: tuple[int, ...], marked_j: tuple[int, ...]) -> Any:
    """An annotation painted completely on the given k and j slices (as a user would), plus a
    'Tumour' segment painted only outside them."""
    array = sitk.GetArrayFromImage(image)
    truth = np.zeros(array.shape, np.uint8)
    truth[array > 50] = 3
    truth[(array > 250) & (array <= 350)] = 1
    truth[array > 350] = 2
    painted = np.zeros_like(truth)
    for k in marked_k:
        painted[k] = truth[k]
    for j in marked_j:
        painted[:, j] = truth[:, j]
    painted[1:3, 1:3, 1:3] = 4  # k 1..2 are never marked
    labels = sitk.GetImageFromArray(painted)
    labels.CopyInformation(image)
    info = [LabelInfo(1, "Left blob", (230, 80, 80)), LabelInfo(2, "Right blob", (80, 80, 230)),
            LabelInfo(3, "Body", (80, 200, 80)), LabelInfo(4, "Tumour", (250, 250, 20))]
    return labels_to_segmentation_node(scene, labels, info, "My annotation", volume)


def _plane_distance(slice_node: Any, point: np.ndarray) -> float:
    matrix = np.array([[slice_node.GetSliceToRAS().GetElement(r, c) for c in range(4)] for r in range(4)])
    normal = matrix[:3, 2] / np.linalg.norm(matrix[:3, 2])
    return abs(float(normal @ (point - matrix[:3, 3])))


def check_sparse_annotation(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path,
                            slice_nodes: list[Any]) -> Any:
    """Mark slices from the Red/Yellow views, fine-tune in the background, get a NEW prediction
    node, copy it into the annotation outside marked slices, jump to a suggestion, save the model
    under another name; the annotation is never changed by the run."""
    model = make_tiny_model(workdir)
    home = workdir / "home"
    image = phantom()
    volume = load_volume(_write(image, workdir / "phantom.nrrd"), "Phantom")
    annotation = _painted_annotation(scene, image, volume, (8, 16, 24), (18,))
    red, yellow = slice_nodes[0], slice_nodes[1]
    for ref in (SliceRef("k", 8), SliceRef("k", 16), SliceRef("k", 24), SliceRef("j", 18)):
        view = show_slice([red, yellow], volume, ref)
        tc.assertEqual(mark_slice_in_view(annotation, view, volume), ref)
    tc.assertEqual(annotation.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE), "j:18;k:8,16,24")
    before, _infos = segmentation_to_labels(annotation, volume)
    before_array = sitk.GetArrayFromImage(before)

    settings = SparseSettings("selftest-sparse", base_model=str(model), max_steps=3, device="cpu", home=str(home))
    ids_before = node_ids(scene)
    run = SparseRun(scene, volume, annotation, settings)
    tc.assertEqual(run.warnings, ["segment 'Tumour' has no painted voxel in the marked slices; left out of fine-tuning"])
    run.start()
    progress = []
    deadline = time.monotonic() + 300
    while not run.done and time.monotonic() < deadline:
        progress += [e.message for e in run.poll() if e.kind == "progress"]
        time.sleep(0.05)
    outcome = run.finish()
    prediction = outcome.prediction_node
    tc.assertTrue(any(m.startswith("step ") and "loss" in m and "s left" in m for m in progress), progress[:3])
    tc.assertEqual(prediction.GetName(), "Phantom selftest-sparse prediction")
    tc.assertEqual([s.GetName() for _i, s in segments(prediction)], ["Left blob", "Right blob", "Body"])
    added = {n for n in node_ids(scene) - ids_before if not scene.GetNodeByID(n).IsA("vtkMRMLDisplayNode")
             and not scene.GetNodeByID(n).IsA("vtkMRMLStorageNode")}
    tc.assertEqual(added, {prediction.GetID()})
    after, _infos = segmentation_to_labels(annotation, volume)
    tc.assertTrue(np.array_equal(sitk.GetArrayViewFromImage(after), before_array), "fine-tuning changed the annotation")
    tc.assertEqual(annotation.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE), "j:18;k:8,16,24")
    saved = home / "models" / "selftest-sparse"
    card = json.loads((saved / "model.json").read_text())
    tc.assertEqual((card["name"], card["version"]), ("selftest-sparse", "1"))
    tc.assertEqual(card["training"]["annotated_slices"], ["j:18", "k:8", "k:16", "k:24"])
    tc.assertEqual(prediction.GetAttribute("MedSeg.ModelFolder"), str(saved))
    predicted, _ = segmentation_to_labels(prediction, volume)
    tc.assertEqual(predicted.GetSize(), image.GetSize())

    # Next suggested slice: a view moves so that its plane passes through that voxel slice.
    suggestions = stored_suggestions(prediction)
    tc.assertEqual(suggestions, outcome.report.suggestions)
    refs = ordered_suggestions(suggestions, marked_slices(annotation))
    tc.assertTrue(refs)
    tc.assertFalse(set(refs) & set(marked_slices(annotation)))
    for ref in refs[:2]:
        view = show_slice(slice_nodes, volume, ref)
        tc.assertEqual(slice_in_view(view, volume), ref)
        ijk = [(n - 1) / 2.0 for n in image.GetSize()]
        ijk["ijk".index(ref.axis)] = ref.index
        tc.assertLess(_plane_distance(view, (node_ijk_to_ras(volume) @ np.array([*ijk, 1.0]))[:3]), 1e-6)
        np.testing.assert_allclose(voxel_centre_ras(volume, ref), (node_ijk_to_ras(volume) @ np.array([*ijk, 1.0]))[:3])

    # Copy the prediction into the annotation: marked slices stay byte-identical.
    report = copy_prediction_into_annotation(annotation, prediction, volume)
    copied = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    marked = known_mask(copied.shape, marked_slices(annotation))
    tc.assertTrue(np.array_equal(copied[marked], before_array[marked]))
    tc.assertEqual([s.GetName() for _i, s in segments(annotation)], ["Left blob", "Right blob", "Body", "Tumour"])
    predicted_array = sitk.GetArrayViewFromImage(predicted)
    outside = ~marked
    for value in (1, 2, 3):  # annotation and prediction share names and values here
        tc.assertTrue(np.array_equal((copied == value)[outside], (predicted_array == value)[outside]), value)
    tc.assertTrue(np.all(copied[1:3, 1:3, 1:3][predicted_array[1:3, 1:3, 1:3] == 0] == 4))  # Tumour kept
    tc.assertEqual(report.changed_voxels, int(np.count_nonzero(copied != before_array)))

    # Save model as: a copy under another name, weights verified.
    copy = save_model_as(saved, "selftest-renamed", user_dir=home / "models")
    tc.assertEqual((copy.name, copy.version, copy.folder), ("selftest-renamed", "1", home / "models" / "selftest-renamed"))
    tc.assertEqual(copy.sha256, card["sha256"])
    return prediction


def check_sparse_bad_inputs(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path,
                            slice_nodes: list[Any]) -> None:
    """No marked slice, a slice outside the volume, nothing painted in them, an oblique view, an
    annotation on another grid: one-line errors, no node added, the annotation unchanged."""
    image = phantom()
    volume = load_volume(_write(image, workdir / "phantom.nrrd"), "Phantom")
    annotation = _painted_annotation(scene, image, volume, (8,), ())
    before = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    settings = SparseSettings("selftest-bad", from_scratch=True, max_steps=1, device="cpu", home=str(workdir / "home"))
    start = lambda: SparseRun(scene, volume, annotation, settings)  # noqa: E731
    _expect_error(tc, scene, InputError, start, "has no marked slice")
    set_marked_slices(annotation, [SliceRef("k", 8), SliceRef("k", 99)])
    _expect_error(tc, scene, InputError, start, "marked slice k:99 is outside 'Phantom' (k runs 0..31)")
    set_marked_slices(annotation, [SliceRef("k", 30)])
    _expect_error(tc, scene, InputError, start, "no labelled voxel in the marked slices (k:30)")
    mark_slice(annotation, SliceRef("k", 8))
    _expect_error(tc, scene, ModelError, lambda: SparseRun(scene, volume, annotation, SparseSettings("bad name")), "bad name")

    red = slice_nodes[0]
    red.SetOrientation("Axial")
    red.SetSliceOffset(1000.0)
    _expect_error(tc, scene, InputError, lambda: mark_slice_in_view(annotation, red, volume), "outside Phantom")
    red.SetOrientation("Sagittal")  # the phantom's i axis runs anterior-posterior: sagittal shows j
    tc.assertEqual(mark_slice_in_view(annotation, red, volume).axis, "j")
    set_marked_slices(annotation, [SliceRef("k", 8)])
    tilted = slice_nodes[2]
    tilted.SetSliceToRASByNTP(0.0, 0.3, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0)
    _expect_error(tc, scene, InputError, lambda: mark_slice_in_view(annotation, tilted, volume), "oblique")

    coarse = sitk.Resample(sitk.Cast(segmentation_to_labels(annotation, volume)[0], sitk.sitkUInt8),
                           [20, 18, 16], sitk.Transform(), sitk.sitkNearestNeighbor, image.GetOrigin(),
                           [s * 2 for s in image.GetSpacing()], image.GetDirection())
    other = labels_to_segmentation_node(scene, coarse, [LabelInfo(1, "Left blob", (1, 2, 3)), LabelInfo(3, "Body", (4, 5, 6))],
                                        "Other grid")
    mark_slice(other, SliceRef("k", 8))
    _expect_error(tc, scene, InputError, lambda: SparseRun(scene, volume, other, settings), "different voxel grid")
    tc.assertTrue(np.array_equal(sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0]), before))
    tc.assertFalse((workdir / "home").exists())


def check_sparse_cancel(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path) -> None:
    """Cancel at once and while training: stops within seconds, nothing added, no model saved,
    the annotation intact."""
    image = phantom()
    volume = load_volume(_write(image, workdir / "phantom.nrrd"), "Phantom")
    annotation = _painted_annotation(scene, image, volume, (8, 16), ())
    set_marked_slices(annotation, [SliceRef("k", 8), SliceRef("k", 16)])
    before = sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0])
    ids = node_ids(scene)
    settings = SparseSettings("selftest-cancel", from_scratch=True, max_steps=100000, time_budget=120, device="cpu",
                              home=str(workdir / "home"))
    for when in ("at once", "while training"):
        run = SparseRun(scene, volume, annotation, settings)
        run.start()
        folder = run.workdir
        if when == "at once":
            run.cancel()
        cancelled_at = time.monotonic() if when == "at once" else None
        deadline = time.monotonic() + 120
        while not run.done and time.monotonic() < deadline:
            events = run.poll()
            if cancelled_at is None and any(e.kind == "progress" and e.message.startswith("step ") for e in events):
                run.cancel()
                cancelled_at = time.monotonic()
            time.sleep(0.05)
        tc.assertIsNotNone(cancelled_at, f"cancel {when}: the run ended first")
        tc.assertLess(time.monotonic() - cancelled_at, 10.0)
        with tc.assertRaises(CancelledError):
            run.finish()
        tc.assertFalse(Path(folder).exists())
        tc.assertEqual(node_ids(scene), ids)
        tc.assertTrue(np.array_equal(sitk.GetArrayFromImage(segmentation_to_labels(annotation, volume)[0]), before))
        tc.assertFalse((workdir / "home" / "models" / "selftest-cancel").exists())


# -- evaluation ----------------------------------------------------------------------------------


def check_evaluation(tc: unittest.TestCase, scene: Any, load_volume: VolumeLoader, workdir: Path) -> Any:
    """Two segmentations with different names: a mapping pairs them, the table has the
    hand-computed Dice, the chart plots it; unmatched names are a one-line error, no nodes."""
    image = phantom()
    volume = load_volume(_write(image, workdir / "phantom.nrrd"), "Phantom")
    shape = image.GetSize()[::-1]
    reference, prediction = np.zeros(shape, np.uint8), np.zeros(shape, np.uint8)
    reference[4:14, 4:14, 4:14] = 1  # 1000 voxels
    prediction[6:16, 4:14, 4:14] = 7  # 1000 voxels, 800 shared: Dice 0.8
    reference[20:24, 20:30, 20:30] = 2  # 400 voxels, not predicted: Dice 0
    prediction[1:3, 1:3, 1:3] = 9  # a segment the user leaves out

    def node(array: np.ndarray, info: list[LabelInfo], name: str) -> Any:
        labels = sitk.GetImageFromArray(array)
        labels.CopyInformation(image)
        return labels_to_segmentation_node(scene, labels, info, name, volume)

    ref = node(reference, [LabelInfo(1, "Liver", (200, 100, 50)), LabelInfo(2, "Spleen", (10, 20, 250))], "Reference")
    pred = node(prediction, [LabelInfo(7, "liver (auto)", (1, 2, 3)), LabelInfo(9, "Noise", (4, 5, 6))], "Prediction")
    _expect_error(tc, scene, InputError, lambda: EvaluationRun(scene, pred, ref),
                  "prediction segment(s) 'liver (auto)', 'Noise' have no reference segment of the same name")
    _expect_error(tc, scene, InputError, lambda: EvaluationRun(scene, pred, ref, {"liver (auto)": "Lever", "Noise": None}),
                  "'Lever'")
    before = node_ids(scene)
    outcome = EvaluationRun(scene, pred, ref, {"liver (auto)": "Liver", "Noise": None}, volume_node=volume).run(timeout=300)
    rows = {row["Segment"]: row for row in table_rows(outcome.table_node)}
    tc.assertEqual(list(rows), ["Background", "Liver", "Spleen"])
    tc.assertAlmostEqual(rows["Liver"]["Dice"], 2 * 800 / (1000 + 1000), places=12)
    tc.assertAlmostEqual(rows["Liver"]["IoU"], 800 / 1200, places=12)
    tc.assertEqual((rows["Liver"]["TP voxels"], rows["Liver"]["FP voxels"], rows["Liver"]["FN voxels"]), (800, 200, 200))
    tc.assertEqual(rows["Spleen"]["Dice"], 0.0)
    tc.assertEqual(rows["Spleen"]["In"], "reference_only")
    tc.assertAlmostEqual(rows["Liver"]["Volume ref (mL)"], 1000 * float(np.prod(image.GetSpacing())) / 1000.0, places=9)
    tc.assertIn("left out of the comparison: Noise", outcome.warnings)
    series = outcome.chart_node.GetNthPlotSeriesNode(0)
    tc.assertEqual(outcome.chart_node.GetNumberOfPlotSeriesNodes(), 1)
    tc.assertEqual((series.GetTableNode(), series.GetYColumnName(), series.GetPlotType()),
                   (outcome.table_node, "Dice", series.PlotTypeBar))
    added = {n for n in node_ids(scene) - before}
    tc.assertEqual(added, {outcome.table_node.GetID(), outcome.chart_node.GetID(), series.GetID()})
    tc.assertIn("<html", outcome.report_html.lower())
    return outcome


# -- what MedSegModuleTest runs -------------------------------------------------------------------


def heavy_requested() -> bool:
    """``MEDSEG_SELFTEST_HEAVY=1`` asks for the heavy checks too."""
    return os.environ.get(HEAVY_ENV, "").strip().lower() in ("1", "true", "yes")


def selected_checks(resample: Callable[[Any, Any], Any], views: list[Any], heavy: bool = False) -> list[tuple[Callable, tuple]]:
    """(check, extra arguments) in the order the module's test runs them."""
    return [(check_segmentation_workflow, ()), (check_bad_inputs, ()), (check_cancel, (heavy,)),
            (check_itk_snap_transform, (resample,)), (check_sparse_annotation, (views,)),
            (check_sparse_bad_inputs, (views,)), (check_sparse_cancel, ()), (check_evaluation, ())]
