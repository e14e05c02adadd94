"""Metrics engine: hand-computed cases for overlap, surface distances, grids and batches."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from scipy.spatial.distance import cdist

from MedSegExtension.errors import CancelledError, InputError
from MedSegExtension.metrics import (
    confusion_matrix,
    evaluate_files,
    evaluate_folders,
    evaluate_images,
    overlap_from_counts,
    summarize,
    surface_metrics,
)
from MedSegExtension.progress import CancelToken


def image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    result = sitk.GetImageFromArray(np.ascontiguousarray(array))
    result.SetSpacing(spacing)
    result.SetOrigin(origin)
    if direction is not None:
        result.SetDirection(direction)
    return result


def cube_pair(shift: int, size=(20, 20, 30)) -> tuple[np.ndarray, np.ndarray]:
    """A 10-voxel cube (reference) and the same cube moved ``shift`` voxels along x (last axis)."""
    ref = np.zeros(size, np.uint8)
    pred = np.zeros(size, np.uint8)
    ref[5:15, 5:15, 10:20] = 1
    pred[5:15, 5:15, 10 + shift : 20 + shift] = 1
    return pred, ref


# --------------------------------------------------------------------------- hand-computed cases


def test_offset_cubes_with_anisotropic_spacing() -> None:
    # Spacing x=0.5, y=2, z=3 mm; the cube moves 2 voxels (1 mm) along x.
    # Overlap 8x10x10 = 800 of 1000 voxels each: Dice 1600/2000, IoU 800/1200.
    # Surface of a 10^3 cube: 1000 - 8^3 = 488 voxels. Moving 2 voxels along x, each direction
    # has 288 surface voxels at 0 mm (shared side faces), 36 (a ring at 1 voxel) at 0.5 mm and
    # 164 (entry face interior 64 + far face 100) at 1.0 mm, since 1 mm < the 2 mm y spacing.
    # 95th percentile index 0.95*487 = 462.65 lies among the 1.0 mm values -> HD95 = 1.0 mm.
    pred, ref = cube_pair(2)
    result = evaluate_images(image(pred, (0.5, 2.0, 3.0)), image(ref, (0.5, 2.0, 3.0)))
    row = result.row(1)
    assert row.dice == pytest.approx(0.8)
    assert row.iou == pytest.approx(2 / 3)
    assert row.precision == pytest.approx(0.8) and row.recall == pytest.approx(0.8)
    assert row.hd95_mm == pytest.approx(1.0)
    assert row.hd_mm == pytest.approx(1.0)
    assert row.assd_mm == pytest.approx((36 * 0.5 + 164 * 1.0) / 488)
    assert row.volume_ref_ml == pytest.approx(1000 * 3.0 / 1000)  # voxel = 0.5*2*3 = 3 mm^3
    assert row.volume_diff_ml == pytest.approx(0.0)
    assert row.misclassification_rate == pytest.approx(400 / pred.size)
    assert row.fp_fn_ratio == pytest.approx(1.0)
    assert result.voxel_volume_ml == pytest.approx(0.003)


def test_hd95_is_the_larger_directed_percentile_not_the_pooled_one() -> None:
    # Reference: a 20^3 cube (20^3 - 18^3 = 2168 surface voxels). Prediction: the same cube
    # plus a 12x12x1 slab facing its x face 4 voxels away (1.5 mm spacing along x -> 6 mm).
    # P->R: 2168 zeros and 144 x 6 mm; 144/2312 > 5 %, so its 95th percentile is 6 mm.
    # R->P: all zero. Pooled (medpy style) would be 0 since 144/4480 < 5 %.
    ref = np.zeros((30, 30, 40), bool)
    ref[5:25, 5:25, 5:25] = True
    pred = ref.copy()
    pred[9:21, 9:21, 28] = True  # x = 28, the cube's last x layer is 24
    metrics = surface_metrics(pred, ref, spacing=(1.0, 1.0, 1.5))
    assert metrics.hd95_mm == pytest.approx(6.0)
    assert metrics.hd_mm == pytest.approx(6.0)
    assert metrics.assd_mm == pytest.approx(144 * 6.0 / (2168 + 144 + 2168))


def _brute_force(pred: np.ndarray, ref: np.ndarray, spacing) -> tuple[float, float]:
    """HD95 and ASSD straight from the definition, with all pairwise distances."""

    def surface(mask: np.ndarray) -> np.ndarray:
        padded = np.pad(mask, 1)
        inner = padded[1:-1, 1:-1, 1:-1]
        interior = inner.copy()
        for axis in range(3):
            for step in (-1, 1):
                interior &= np.roll(padded, step, axis=axis)[1:-1, 1:-1, 1:-1]
        return np.argwhere(inner & ~interior) * np.asarray(spacing)

    a, b = surface(pred), surface(ref)
    distances = cdist(a, b)
    forward, backward = distances.min(axis=1), distances.min(axis=0)
    hd95 = max(np.percentile(forward, 95), np.percentile(backward, 95))
    return hd95, (forward.sum() + backward.sum()) / (forward.size + backward.size)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy.*")  # raised inside MONAI itself
def test_surface_distances_match_brute_force_and_monai() -> None:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    rng = np.random.default_rng(3)
    z, y, x = np.meshgrid(*(np.arange(n) for n in (14, 18, 22)), indexing="ij")
    ref = ((z - 7) / 5) ** 2 + ((y - 9) / 6) ** 2 + ((x - 11) / 8) ** 2 < 1
    pred = ((z - 6) / 4) ** 2 + ((y - 10) / 7) ** 2 + ((x - 12) / 6) ** 2 < 1
    pred ^= rng.random(pred.shape) < 0.01  # a few stray voxels, both ways
    spacing = (2.5, 0.8, 1.3)  # (z, y, x)
    ours = surface_metrics(pred, ref, spacing)
    expected_hd95, expected_assd = _brute_force(pred, ref, spacing)
    assert ours.hd95_mm == pytest.approx(expected_hd95, rel=1e-6)
    assert ours.assd_mm == pytest.approx(expected_assd, rel=1e-6)
    as_tensor = [np.asarray(m, np.float32)[None, None] for m in (pred, ref)]
    monai_hd95 = float(compute_hausdorff_distance(*as_tensor, percentile=95, spacing=list(spacing))[0, 0])
    monai_assd = float(compute_average_surface_distance(*as_tensor, symmetric=True, spacing=list(spacing))[0, 0])
    assert ours.hd95_mm == pytest.approx(monai_hd95, rel=1e-5)
    assert ours.assd_mm == pytest.approx(monai_assd, rel=1e-5)


def test_nested_spheres() -> None:
    z, y, x = np.meshgrid(*(np.arange(31) - 15.0 for _ in range(3)), indexing="ij")
    radius = np.sqrt(x**2 + y**2 + z**2)
    ref, pred = (radius <= 10).astype(np.uint8), (radius <= 7).astype(np.uint8)
    row = evaluate_images(image(pred), image(ref)).row(1)
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    assert row.tp == n_pred and row.fp == 0 and row.fn == n_ref - n_pred  # prediction inside reference
    assert row.dice == pytest.approx(2 * n_pred / (n_pred + n_ref))
    assert row.dice == pytest.approx(2 * 7**3 / (7**3 + 10**3), abs=0.02)  # continuous spheres
    assert row.precision == pytest.approx(1.0)
    assert row.volume_ref_ml == pytest.approx(4 / 3 * math.pi * 1000 / 1000, rel=0.03)
    assert row.fp_fn_ratio == 0.0
    assert abs(row.hd95_mm - 3.0) <= 1.0  # radii differ by 3 mm, up to one voxel of discretisation
    assert 2.0 <= row.assd_mm <= 3.5


def test_empty_prediction_and_empty_reference() -> None:
    _, ref = cube_pair(0)
    empty = np.zeros_like(ref)
    missed = evaluate_images(image(empty), image(ref))
    row = missed.row(1)
    assert row.status == "reference_only"
    assert (row.dice, row.iou, row.precision, row.recall) == (0.0, 0.0, 0.0, 0.0)
    assert math.isinf(row.hd95_mm) and math.isinf(row.assd_mm)
    assert row.volume_diff_percent == pytest.approx(-100.0)
    assert row.fp_fn_ratio == 0.0
    assert any("only in the reference" in w for w in missed.warnings)

    invented = evaluate_images(image(ref), image(empty)).row(1)
    assert invented.status == "prediction_only"
    assert invented.dice == 0.0 and math.isinf(invented.hd95_mm)
    assert math.isinf(invented.volume_diff_percent) and math.isinf(invented.fp_fn_ratio)

    both = overlap_from_counts(0, 0, 0, 100)
    assert (both.dice, both.iou, both.precision, both.recall, both.fp_fn_ratio) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert surface_metrics(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1, 1)).hd95_mm == 0.0


def test_label_values_missing_in_one_map_and_named_but_absent() -> None:
    ref = np.zeros((12, 12, 12), np.uint8)
    pred = np.zeros_like(ref)
    ref[1:5, 1:5, 1:5], pred[1:5, 1:5, 1:5] = 1, 1  # perfect
    ref[6:10, 1:5, 1:5], pred[6:10, 1:5, 1:5] = 2, 2  # perfect
    ref[1:5, 6:10, 1:5] = 3  # missed
    pred[6:10, 6:10, 6:10] = 4  # invented
    names = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}
    result = evaluate_images(image(pred), image(ref), names)
    assert result.values == [0, 1, 2, 3, 4, 5]
    assert [result.row(v).status for v in (1, 2, 3, 4, 5)] == ["both", "both", "reference_only", "prediction_only", "neither"]
    five = result.row(5)
    assert five.dice == 1.0 and five.hd95_mm == 0.0
    # foreground mean over 1..4 only: Dice (1 + 1 + 0 + 0) / 4, HD95 inf propagates
    assert result.averages["foreground"]["dice"] == pytest.approx(0.5)
    assert math.isinf(result.averages["foreground"]["hd95_mm"])
    text = " ".join(result.warnings)
    assert "3 (three)" in text and "4 (four)" in text and "5 (five)" in text


def test_twenty_class_confusion_matrix() -> None:
    # Class k (1..20) fills x in [3(k-1), 3k) of a 60x8x8 volume. In the prediction's first
    # z slice, left and right are swapped (k <-> k+10), as a mirrored network would do.
    ref = np.zeros((8, 8, 60), np.uint8)
    for k in range(1, 21):
        ref[:, :, 3 * (k - 1) : 3 * k] = k
    pred = ref.copy()
    swapped = np.where(ref[0] <= 10, ref[0] + 10, ref[0] - 10)
    pred[0] = swapped
    result = evaluate_images(image(pred), image(ref))
    matrix = result.confusion
    assert matrix.shape == (21, 21)
    for k in range(1, 21):
        partner = k + 10 if k <= 10 else k - 10
        assert matrix[k, k] == 3 * 8 * 7 and matrix[k, partner] == 3 * 8
        assert matrix[k].sum() == 3 * 8 * 8
    assert matrix[0].sum() == 0 and matrix[:, 0].sum() == 0
    assert np.count_nonzero(matrix) == 40
    row = result.row(7)
    assert row.dice == pytest.approx(2 * 168 / (2 * 168 + 24 + 24))
    assert row.misclassification_rate == pytest.approx(48 / ref.size)
    assert row.fp_fn_ratio == pytest.approx(1.0)
    assert np.array_equal(confusion_matrix(pred, ref, list(range(21))), matrix)


# --------------------------------------------------------------------------- grids and inputs


def test_prediction_on_another_grid_is_resampled() -> None:
    ref = np.zeros((40, 40, 40), np.uint8)
    ref[10:20, 12:24, 8:30] = 1
    coarse = ref[::2, ::2, ::2].copy()  # 2 mm voxels covering the same space as the 1 mm grid
    result = evaluate_images(image(coarse, (2.0, 2.0, 2.0), (0.5, 0.5, 0.5)), image(ref))
    assert result.row(1).dice == 1.0 and result.row(1).hd95_mm == 0.0
    assert any("resampled" in w for w in result.warnings)

    # The same prediction stored with a flipped x axis: same voxels in space, different grid.
    flipped = image(ref[:, :, ::-1], origin=(39.0, 0.0, 0.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert evaluate_images(flipped, image(ref)).row(1).dice == 1.0


def test_partial_and_no_overlap() -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[2:8, 2:8, 2:8] = 1
    shifted = image(ref, origin=(5.0, 0.0, 0.0))  # half of it outside the reference grid
    result = evaluate_images(shifted, image(ref))
    assert any("outside the prediction" in w for w in result.warnings)
    assert any("outside the reference grid" in w for w in result.warnings)
    assert result.row(1).tp == 1 * 6 * 6  # only x = 7 (pred x 2) overlaps ref x 2..7
    with pytest.raises(InputError, match=r"^pred\.nii: no physical overlap with ref\.nii"):
        evaluate_images(image(ref, origin=(500.0, 0, 0)), image(ref), prediction_source="pred.nii", reference_source="ref.nii")


def test_non_integer_label_maps_are_rejected(tmp_path: Path) -> None:
    ref = np.zeros((6, 6, 6), np.float32)
    ref[1:4, 1:4, 1:4] = 1.0
    whole = evaluate_images(image(ref), image(ref.astype(np.uint8)))  # whole-number floats are fine
    assert whole.row(1).dice == 1.0
    probabilities = ref * 0.7
    path = tmp_path / "probabilities.nii.gz"
    sitk.WriteImage(image(probabilities), str(path))
    sitk.WriteImage(image(ref.astype(np.uint8)), str(tmp_path / "ref.nii.gz"))
    with pytest.raises(InputError, match=r"probabilities\.nii\.gz: not a label map \(27 voxels hold non-integer values\)"):
        evaluate_files(path, tmp_path / "ref.nii.gz")
    ct = np.arange(6 * 6 * 60, dtype=np.int16).reshape(6, 6, 60)
    with pytest.raises(InputError, match="intensity image"):
        evaluate_images(image(ct), image(ct))


def test_segmentation_files_are_matched_by_segment_name(tmp_path: Path) -> None:
    ref = np.zeros((10, 10, 10), np.uint8)
    ref[1:4, 1:4, 1:4] = 1  # liver
    ref[5:9, 5:9, 5:9] = 2  # kidney
    sitk.WriteImage(image(ref, (1.0, 1.0, 2.0)), str(tmp_path / "ref.nii.gz"))
    # The prediction is a Slicer segmentation that numbered kidney 1 and liver 2.
    ijk_to_lps = np.diag([1.0, 1.0, 2.0, 1.0])
    segmentation = slicerio.create_segmentation((10, 10, 10), ijk_to_lps)
    as_ijk = ref.transpose(2, 1, 0)
    slicerio.add_segment(segmentation, as_ijk == 2, {"name": "kidney", "color": [0.0, 1.0, 0.0]})
    slicerio.add_segment(segmentation, as_ijk == 1, {"name": "liver", "color": [1.0, 0.0, 0.0]})
    slicerio.write_segmentation(str(tmp_path / "pred.seg.nrrd"), segmentation)
    result = evaluate_files(tmp_path / "pred.seg.nrrd", tmp_path / "ref.nii.gz", {1: "liver", 2: "kidney"})
    assert result.row(1).dice == 1.0 and result.row(2).dice == 1.0
    assert result.row(1).name == "liver"
    assert result.colors[1] == (255, 0, 0)
    assert any("matched by segment name" in w for w in result.warnings)

    unnamed = slicerio.create_segmentation((10, 10, 10), ijk_to_lps)
    slicerio.add_segment(unnamed, as_ijk == 1, {"name": "Segment_1"})
    slicerio.write_segmentation(str(tmp_path / "unnamed.seg.nrrd"), unnamed)
    by_value = evaluate_files(tmp_path / "unnamed.seg.nrrd", tmp_path / "ref.nii.gz", {1: "liver", 2: "kidney"})
    assert by_value.row(1).dice == 1.0 and by_value.row(2).status == "reference_only"
    assert any("'Segment_1' (1) is 'liver'" in w for w in by_value.warnings)

    overlapping = slicerio.create_segmentation((10, 10, 10), ijk_to_lps)
    slicerio.add_segment(overlapping, as_ijk > 0, {"name": "all"})
    slicerio.add_segment(overlapping, as_ijk == 1, {"name": "liver"})
    slicerio.write_segmentation(str(tmp_path / "overlap.seg.nrrd"), overlapping)
    with pytest.raises(InputError, match=r"overlap\.seg\.nrrd: 27 voxels belong to more than one segment"):
        evaluate_files(tmp_path / "overlap.seg.nrrd", tmp_path / "ref.nii.gz")


# --------------------------------------------------------------------------- outputs and batches


def test_json_and_csv_outputs(tmp_path: Path) -> None:
    pred, ref = cube_pair(2)
    pred[0:2, 0:2, 0:2] = 3  # a class only in the prediction: infinite distances
    result = evaluate_images(image(pred), image(ref), {1: "cube", 3: "stray"})
    data = json.loads(result.to_json(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8")) == data
    assert [c["value"] for c in data["classes"]] == [0, 1, 3]
    assert data["classes"][2]["hd95_mm"] == "inf"
    assert data["classes"][1]["dice"] == pytest.approx(0.8)
    assert data["confusion_matrix"]["counts"][1][1] == 800
    lines = result.to_csv(tmp_path / "out.csv").splitlines()
    assert lines[0].startswith("row,value,name,status,dice,")
    assert len(lines) == 1 + 3 + 2  # header, classes, two means
    assert lines[2].split(",")[:4] == ["class", "1", "cube", "both"]
    assert (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines() == lines


def test_summary_statistics_handle_infinity() -> None:
    stats = summarize([1.0, 0.9, 0.8])
    assert (stats.mean, stats.median, stats.q1, stats.q3) == pytest.approx((0.9, 0.9, 0.85, 0.95))
    assert stats.iqr == pytest.approx(0.1)
    with_inf = summarize([1.0, 2.0, math.inf])
    assert math.isinf(with_inf.mean) and with_inf.median == 2.0 and with_inf.q1 == 1.5 and math.isinf(with_inf.q3)
    assert summarize([math.nan]).n == 0


def test_batch_over_two_folders(tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    for shift, case in ((0, "a"), (1, "b"), (2, "c")):  # Dice (10 - shift) / 10
        pred, ref = cube_pair(shift)
        sitk.WriteImage(image(pred), str(tmp_path / "pred" / f"{case}.nii.gz"))
        sitk.WriteImage(image(ref), str(tmp_path / "ref" / f"{case}.nrrd"))
    sitk.WriteImage(image(ref), str(tmp_path / "ref" / "lonely.nii.gz"))
    batch = evaluate_folders(tmp_path / "pred", tmp_path / "ref")
    assert [case for case, _r in batch.cases] == ["a", "b", "c"]
    assert any("lonely" in w for w in batch.warnings)
    dice = batch.class_summary()[1]["dice"]
    assert (dice.n, dice.mean, dice.median, dice.q1, dice.q3) == pytest.approx((3, 0.9, 0.9, 0.85, 0.95))
    assert batch.average_summary()["foreground"]["dice"].median == pytest.approx(0.9)
    values, total = batch.combined_confusion()
    assert values == [0, 1] and total[1, 1] == 1000 + 900 + 800
    table = batch.format_table()
    assert "0.9000" in table and "c" in table
    csv_lines = batch.to_csv().splitlines()
    assert sum(line.startswith(("a,", "b,", "c,")) for line in csv_lines) == 3 * 4
    assert any(line.startswith(",summary_median,1,") for line in csv_lines)
    assert json.loads(batch.to_json())["summary"]["classes"][1]["dice"]["iqr"] == pytest.approx(0.1)


def test_cancel_stops_the_evaluation() -> None:
    pred, ref = cube_pair(1)
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        evaluate_images(image(pred), image(ref), cancel=token)
