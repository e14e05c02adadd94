"""Sparse fine-tuning: real torch training on a real volume, masked loss, iteration, CLI loop."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegExtension.cli.main import main
from MedSegExtension.errors import CancelledError
from MedSegExtension.io.segmentation_files import read_labelmap, write_labelmap
from MedSegExtension.io.volumes import same_geometry
from MedSegExtension.models.card import LabelInfo, NetworkConfig
from MedSegExtension.models.registry import ModelRegistry, load_network
from MedSegExtension.preprocessing.spatial import spacing_grid
from MedSegExtension.progress import CancelToken
from MedSegExtension.sparse.annotations import SliceRef, SparseAnnotation, from_slices
from MedSegExtension.sparse.finetune import FineTuneSettings, _build_network, fine_tune
from MedSegExtension.sparse.held_out import choose_held_out
from MedSegExtension.sparse.priors import class_boxes, keep_annotated_components, restrict_to_boxes
from MedSegExtension.sparse.targets import grid_coverage, sparse_targets

INFO = [LabelInfo(1, "Left blob", (230, 80, 80)), LabelInfo(2, "Right blob", (80, 80, 230))]


def two_balls(size: int = 32) -> tuple[sitk.Image, np.ndarray]:
    rng = np.random.default_rng(0)
    k, j, i = np.meshgrid(*(np.arange(size),) * 3, indexing="ij")
    left = ((i - 12) ** 2 + (j - 16) ** 2 + (k - 16) ** 2) < 7**2
    right = ((i - 25) ** 2 + (j - 16) ** 2 + (k - 16) ** 2) < 4**2
    image = sitk.GetImageFromArray((20 + 60 * left + 100 * right + rng.normal(0, 8, left.shape)).astype(np.float32))
    image.SetSpacing((1.1, 1.0, 1.2))
    return image, (left * 1 + right * 2).astype(np.uint8)


def labels_on(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(image)
    return labels


FAST = FineTuneSettings(max_steps=12, time_budget=300, patch_size=(16, 16, 16), batch_size=1,
                        network=NetworkConfig(channels=(4, 8)), validate_every=4)


def test_unlabelled_voxels_change_nothing() -> None:
    """Zero weight means zero influence: scrambling labels outside the known voxels gives identical training."""
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 14), SliceRef("k", 16), SliceRef("k", 18)])
    scrambled = annotation.labels.copy()
    scrambled[~annotation.known] = np.random.default_rng(1).integers(0, 3, (~annotation.known).sum())
    other = SparseAnnotation(scrambled, annotation.known.copy(), annotation.slices)
    torch.manual_seed(0)
    first = fine_tune(image, annotation, INFO, FAST)
    torch.manual_seed(0)
    second = fine_tune(image, other, INFO, FAST)
    assert first.losses == second.losses
    for a, b in zip(first.network.state_dict().values(), second.network.state_dict().values()):
        assert torch.equal(a, b)
    assert first.held_out == SliceRef("k", 16) and first.held_out_dice is not None


def test_training_fits_the_known_voxels_and_predicts_on_the_input_grid() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 13), SliceRef("k", 19), SliceRef("j", 16)])
    before = annotation.labels.copy(), annotation.known.copy()
    settings = FineTuneSettings(max_steps=120, time_budget=600, patch_size=(24, 24, 24), batch_size=2,
                                network=NetworkConfig(channels=(8, 16, 32)), learning_rate=3e-3, hold_out=False)
    result = fine_tune(image, annotation, INFO, settings)
    assert np.mean(result.losses[-10:]) < 0.5 * np.mean(result.losses[:10])
    assert same_geometry(result.labels, image)
    prediction = sitk.GetArrayFromImage(result.labels)
    # What the user drew stays drawn: every annotated voxel keeps its label in the dense result.
    assert np.array_equal(prediction[annotation.known], truth[annotation.known])
    dice = 2 * ((prediction == 1) & (truth == 1)).sum() / ((prediction == 1).sum() + (truth == 1).sum())
    assert dice > 0.6
    assert np.array_equal(before[0], annotation.labels) and np.array_equal(before[1], annotation.known)
    assert set(result.suggestions) == {"i", "j", "k"}


def test_sparse_targets_on_the_native_grid_are_the_annotation() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 16), SliceRef("i", 25)])
    target, weight = sparse_targets(annotation, image, image, [1, 2], "LPS")
    assert np.array_equal(weight, annotation.known.astype(np.float32))
    assert np.array_equal(target[annotation.known], truth[annotation.known])
    assert not target[~annotation.known].any()


def test_sparse_targets_reach_a_coarser_grid_through_the_voxels_a_slice_crosses() -> None:
    """One 1 mm slice on a 2 mm grid: weight 1 - distance / 2 mm on the coarse planes it passes
    through (nowhere else), and each coarse voxel takes the class that covers it."""
    image, truth = two_balls()
    image.SetSpacing((1.0, 1.0, 1.0))
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 16)])
    coarse = spacing_grid(image, (2.0, 2.0, 2.0))
    target, weight = sparse_targets(annotation, image, coarse, [1, 2], "LPS")
    planes = np.flatnonzero(weight.any(axis=(1, 2)))
    z = np.array([coarse.TransformIndexToPhysicalPoint((0, 0, int(k)))[2] for k in planes])
    assert len(planes) in (1, 2) and np.all(np.abs(z - 16.0) < 2.0)  # the planes the slice crosses
    for k, distance in zip(planes, np.abs(z - 16.0)):
        assert np.allclose(weight[k, 2:-2, 2:-2], 1.0 - distance / 2.0, atol=1e-5)
    # Coarse voxel centres well inside a ball take its class; the rest of the plane is background.
    for k in planes:
        for j, i in ((8, 6), (8, 12), (2, 2)):
            x, y, _ = coarse.TransformIndexToPhysicalPoint((i, j, int(k)))
            assert target[k, j, i] == truth[16, round(y), round(x)]
    assert set(np.unique(target[weight > 0]).tolist()) == {0, 1, 2}
    assert grid_coverage(annotation.known, image, image, "LPS").sum() == annotation.known.sum()


def test_a_slice_is_held_out_only_when_its_structures_keep_two_others() -> None:
    image, truth = two_balls()  # the right ball spans k 13..19, the left one k 10..22
    labels = labels_on(image, truth)
    kept_two = from_slices(image, labels, [SliceRef("k", 13), SliceRef("k", 16), SliceRef("k", 19)])
    assert choose_held_out(kept_two) == SliceRef("k", 16)
    # Holding out k:16 would leave the right ball a single slice to learn from; k:22 (the left ball
    # only, which k:13 and k:16 still label) can go.
    one_left = from_slices(image, labels, [SliceRef("k", 13), SliceRef("k", 16), SliceRef("k", 22)])
    assert choose_held_out(one_left) == SliceRef("k", 22)
    two_only = from_slices(image, labels, [SliceRef("k", 13), SliceRef("k", 16)])
    assert choose_held_out(two_only) is None
    # 1+1+1 orthogonal: the slice through one ball only can go; k:16 and j:16 cross both balls,
    # and the right ball is on just the two of them.
    orthogonal = from_slices(image, labels, [SliceRef("k", 16), SliceRef("j", 16), SliceRef("i", 12)])
    assert choose_held_out(orthogonal) == SliceRef("i", 12)


def test_held_out_slice_rejoins_training_after_early_stop() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 14), SliceRef("k", 16), SliceRef("k", 18)])
    settings = replace(FAST, max_steps=60, validate_every=2, patience=1, learning_rate=1e-5)
    result = fine_tune(image, annotation, INFO, settings)
    assert "final phase with all slices" in result.stopped_because
    assert result.steps < 60 and result.held_out == SliceRef("k", 16) and result.held_out_dice is not None
    assert result.card.training["held_out_dice"] == round(result.held_out_dice, 4)
    # Interpolation is fused in only when it scores at least the network's Dice on the held-out slice.
    interpolation = result.card.training["interpolation_held_out_dice"]
    assert interpolation is not None
    assert result.card.training["interpolation_fused"] == (interpolation >= round(result.held_out_dice, 4) - 1e-4)


def test_held_out_dice_is_measured_even_when_the_final_phase_starts_before_any_validation() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 14), SliceRef("k", 16), SliceRef("k", 18)])
    result = fine_tune(image, annotation, INFO, replace(FAST, validate_every=1000, patience=0))
    assert result.held_out == SliceRef("k", 16)
    assert 0.0 <= result.held_out_dice <= 1.0 and result.steps == FAST.max_steps


def test_fine_tuning_works_at_the_base_models_spacing(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    base = ModelRegistry().find("tiny-test")
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 14), SliceRef("k", 18)])
    result = fine_tune(image, annotation, INFO, replace(FAST, base_model="tiny-test", max_steps=3))
    assert tuple(result.card.target_spacing) == tuple(base.target_spacing) != image.GetSpacing()
    assert same_geometry(result.labels, image)
    native = fine_tune(image, annotation, INFO, replace(FAST, base_model="tiny-test", max_steps=3,
                                                        working_spacing="native"))
    assert np.allclose(native.card.target_spacing, image.GetSpacing())


def test_segments_named_in_another_style_reuse_the_base_models_output_channel(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    base = ModelRegistry().find("tiny-test")
    source = load_network(base, "cpu")
    classes = [LabelInfo(7, "blob_R", (0, 0, 0)), LabelInfo(9, "Tail", (0, 0, 0))]
    network, reused = _build_network(base, classes, FAST, torch.device("cpu"))
    assert reused == ["blob_R"]
    right = 1 + [label.name for label in base.labels].index("Right blob")
    new, old = network.head.conv.conv, source.head.conv.conv
    assert torch.equal(new.weight[1], old.weight[right]) and torch.equal(new.bias[0], old.bias[0])
    assert not torch.equal(new.weight[2], old.weight[right])  # "Tail" has no counterpart: a fresh channel


def test_a_base_model_that_knows_none_of_the_classes_is_set_aside(
        tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 14), SliceRef("k", 18)])
    unknown = [LabelInfo(1, "Grey matter", (1, 1, 1)), LabelInfo(2, "White matter", (2, 2, 2))]
    settings = replace(FAST, base_model="tiny-test", max_steps=2)
    result = fine_tune(image, annotation, unknown, settings)
    assert result.card.training["base_model"] is None and result.reused_classes == []
    assert result.card.training["unrelated_base_model_skipped"] == "tiny-test 0.0.1"
    assert np.allclose(result.card.target_spacing, image.GetSpacing())  # from scratch: the image's own voxels
    kept = fine_tune(image, annotation, unknown, replace(settings, use_unrelated_base=True))
    assert kept.card.training["base_model"] == "tiny-test 0.0.1" and tuple(kept.card.target_spacing) == (2.0, 2.0, 2.0)


def test_annotation_priors_drop_far_and_disconnected_pieces() -> None:
    image, truth = two_balls()
    prediction = truth.copy()
    prediction[2:5, 2:5, 2:5] = 1  # a look-alike far from the labelled structure
    prediction[16, 16, 0:3] = 1  # inside the left ball's row but disconnected from it
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 16)])
    kept = keep_annotated_components(prediction, annotation.labels, annotation.known, annotation.classes)
    assert np.array_equal(kept, truth)
    boxes = class_boxes(annotation.labels, annotation.known, annotation.classes)
    # One slice through a ball of radius 7: the box grows 7 voxels (half the median side) through-plane.
    left_k = boxes[1][0]
    assert (left_k.start, left_k.stop) == (16 - 7, 17 + 7)
    assert restrict_to_boxes(prediction, boxes)[3, 3, 3] == 0
    assert np.array_equal(restrict_to_boxes(truth, boxes), truth)  # the whole of each ball fits its box


def test_cancel_stops_training() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 16)])
    token = CancelToken()
    steps = []

    def cancel_after_three(fraction: float, message: str) -> None:
        steps.append(message)
        if len(steps) == 3:
            token.cancel()

    with pytest.raises(CancelledError):
        fine_tune(image, annotation, INFO, FAST, progress=cancel_after_three, cancel=token)
    assert len(steps) == 3


@pytest.fixture
def sparse_case(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    image, truth = two_balls()
    volume = tmp_path / "volume.nii.gz"
    sitk.WriteImage(image, str(volume))
    annotation = tmp_path / "annotation.seg.nrrd"
    write_labelmap(labels_on(image, truth), annotation, INFO)
    return volume, annotation


def test_cli_loop_finetune_predict_iterate_suggest(sparse_case, tmp_path, capsys) -> None:
    volume, annotation = sparse_case
    digest = hashlib.sha256(annotation.read_bytes()).hexdigest()
    output = tmp_path / "dense.seg.nrrd"
    code = main(["finetune", str(volume), "--labels", str(annotation), "--slices", "k:14,16,18",
                 "--name", "blobs", "--max-steps", "6", "-o", str(output)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "from tiny-test 0.0.1" in out and "Left blob, Right blob" in out  # names matched the base card
    assert "held-out slice k:16" in out and "saved model blobs version 1" in out
    labels, info = read_labelmap(output)
    assert same_geometry(labels, sitk.ReadImage(str(volume))) and [i.name for i in info] == ["Left blob", "Right blob"]
    assert hashlib.sha256(annotation.read_bytes()).hexdigest() == digest  # the user's annotation is untouched

    card = ModelRegistry().find("blobs")
    assert card.training["annotated_slices"] == ["k:14", "k:16", "k:18"] and card.training["base_model"] == "tiny-test 0.0.1"
    assert tuple(card.target_spacing) == (2.0, 2.0, 2.0)  # the base model's scale
    assert main(["predict", str(volume), "--model", "blobs", "-o", str(tmp_path / "again.nii.gz")]) == 0

    # Iterate: warm start from the previous round; a new version, the first kept.
    assert main(["finetune", str(volume), "--labels", str(annotation), "--slices", "k:12,16,20;j:16",
                 "--model", "blobs", "--name", "blobs", "--max-steps", "4"]) == 0
    assert "saved model blobs version 2" in capsys.readouterr().out
    assert ModelRegistry().find("blobs").version == "2" and ModelRegistry().find("blobs-v2").version == "2"
    assert main(["suggest", str(volume), "--model", "blobs", "--count", "2", "--json"]) == 0
    assert set(__import__("json").loads(capsys.readouterr().out)) == {"i", "j", "k"}


def test_cli_json_summary(sparse_case, capsys) -> None:
    volume, annotation = sparse_case
    first = volume.parent / "first.seg.nrrd"
    code = main(["finetune", str(volume), "--labels", str(annotation), "--slices", "k:14,16,18",
                 "--name", "blobs", "--max-steps", "3", "--progress", "json", "--working-spacing", "native",
                 "--first-output", str(first)])
    assert code == 0
    assert np.allclose(ModelRegistry().find("blobs").target_spacing, (1.1, 1.0, 1.2))
    events = [__import__("json").loads(line) for line in capsys.readouterr().err.splitlines()]
    summary = events[-1]["result"]
    # The first answer was announced before the first training step, and is on disk with the segments' names.
    announced = next(n for n, e in enumerate(events) if "first_answer" in e)
    assert events[announced]["first_answer"]["path"] == str(first)
    assert announced < next(n for n, e in enumerate(events) if e.get("message", "").startswith("step 1,"))
    first_labels, first_info = read_labelmap(first)
    assert [i.name for i in first_info] == ["Left blob", "Right blob"]
    assert set(summary["first_answer_choices"].values()) <= {"region growing", "region growing, 26 neighbours",
                                                             "interpolation"}
    assert set(np.unique(sitk.GetArrayFromImage(first_labels)).tolist()) == {0, 1, 2}
    assert summary["model"] == "blobs" and summary["version"] == "1" and summary["steps"] == 3
    assert summary["held_out_slice"] == "k:16" and set(summary["suggestions"]) == {"i", "j", "k"}
    card = ModelRegistry().find("blobs")
    assert summary["structure_choices"] == card.training["structure_choices"]
    assert len(summary["structure_choices"]) == 2
    assert set(summary["structure_choices"].values()) <= {"network", "region growing", "region growing, 26 neighbours",
                                                          "interpolation"}
    assert any(e.get("message", "").startswith("step 3, loss") for e in events if "message" in e)


def test_cli_refuses_bad_sparse_input(sparse_case, tmp_path, capsys) -> None:
    volume, annotation = sparse_case
    code = main(["finetune", str(volume), "--labels", str(annotation), "--slices", "k:99", "--name", "x"])
    assert code == 2 and "outside the volume" in capsys.readouterr().err
    code = main(["finetune", str(volume), "--labels", str(annotation), "--slices", "k:1", "--name", "x"])
    assert code == 2 and "contain no structure" in capsys.readouterr().err
    code = main(["finetune", str(volume), "--labels", str(annotation), "--scribbles", "--name", "x"])
    assert code == 2 and "--background-value" in capsys.readouterr().err
    assert not (tmp_path / "home" / "models").exists()
