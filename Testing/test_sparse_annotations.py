"""Sparse labels: slice specs, anatomical names, scribbles, held-out slices, suggestions, versions."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom

from MedSegExtension.errors import InputError, ModelError
from MedSegExtension.models.registry import ModelRegistry, next_user_model_folder
from MedSegExtension.sparse.annotations import (
    SliceRef,
    from_mask,
    from_scribbles,
    from_slices,
    parse_slice_spec,
    plane_axis,
)
from MedSegExtension.sparse.suggest import suggest_slices


def _labels_like(image: sitk.Image, array: np.ndarray) -> sitk.Image:
    labels = sitk.GetImageFromArray(array.astype(np.uint8))
    labels.CopyInformation(image)
    return labels


def test_slice_spec_by_voxel_axis_and_by_plane_name() -> None:
    axial_stack = make_phantom(size=(30, 20, 10))
    assert parse_slice_spec("k:4,6;j:10", axial_stack) == [SliceRef("k", 4), SliceRef("k", 6), SliceRef("j", 10)]
    assert parse_slice_spec("axial:3; sagittal:7", axial_stack) == [SliceRef("k", 3), SliceRef("i", 7)]
    # A sagittally acquired volume: voxel axis i runs superior-inferior, k runs left-right.
    sagittal_stack = make_phantom(size=(30, 20, 10), direction=(0, 0, 1, 0, 1, 0, -1, 0, 0))
    assert plane_axis(sagittal_stack, "axial") == "i"
    assert plane_axis(sagittal_stack, "sagittal") == "k"
    assert parse_slice_spec("axial:25", sagittal_stack) == [SliceRef("i", 25)]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("k:10", "outside the volume"), ("k:-1", "outside the volume"), ("x:3", "unknown axis 'x'"),
     ("k", "cannot parse"), ("", "no slice given"), ("axial:99", "outside the volume")],
)
def test_bad_slice_specs(spec: str, problem: str) -> None:
    with pytest.raises(InputError, match=problem):
        parse_slice_spec(spec, make_phantom(size=(30, 20, 10)))


def test_complete_slices_know_every_voxel_of_a_marked_slice_and_nothing_else() -> None:
    image = make_phantom(size=(12, 10, 8))
    painted = np.zeros((8, 10, 12), np.uint8)
    painted[2, 3:6, 3:6] = 1
    painted[5, 4:7, 6:9] = 2  # on slice k=5, which is not marked: must be dropped with a warning
    with pytest.warns(UserWarning, match=r"label value\(s\) \[2\]"):
        annotation = from_slices(image, _labels_like(image, painted), [SliceRef("k", 2), SliceRef("j", 1)])
    assert annotation.known[2].all() and annotation.known[:, 1, :].all()
    assert annotation.known.sum() == 10 * 12 + 8 * 12 - 12  # two planes minus their shared line
    assert annotation.classes == [1]
    assert annotation.labels[5].max() == 0


def test_held_out_slice_keeps_voxels_shared_with_kept_slices() -> None:
    image = make_phantom(size=(12, 10, 8))
    painted = np.zeros((8, 10, 12), np.uint8)
    painted[2, 3:6, 3:6] = 1
    annotation = from_slices(image, _labels_like(image, painted), [SliceRef("k", 2), SliceRef("j", 4)])
    rest = annotation.without(SliceRef("k", 2))
    assert rest.slices == (SliceRef("j", 4),)
    assert not rest.known[2, 0, 0] and rest.known[2, 4, 0]  # the crossing line stays known
    assert rest.known.sum() == 8 * 12


def test_scribbles_and_masks() -> None:
    image = make_phantom(size=(12, 10, 8))
    strokes = np.zeros((8, 10, 12), np.uint8)
    strokes[3, 4, 2:6] = 1
    strokes[3, 8, 2:9] = 9  # background strokes
    annotation = from_scribbles(image, _labels_like(image, strokes), background_value=9)
    assert annotation.known.sum() == 4 + 7
    assert set(np.unique(annotation.labels[annotation.known])) == {0, 1}
    with pytest.raises(InputError, match="no background strokes"):
        from_scribbles(image, _labels_like(image, strokes), background_value=5)
    mask = _labels_like(image, (strokes > 0).astype(np.uint8))
    assert from_mask(image, _labels_like(image, strokes), mask).known.sum() == 11


def test_annotation_errors() -> None:
    image = make_phantom(size=(12, 10, 8))
    empty = _labels_like(image, np.zeros((8, 10, 12)))
    with pytest.raises(InputError, match="contain no structure"):
        from_slices(image, empty, [SliceRef("k", 1)])
    with pytest.raises(InputError, match="no labelled voxel"):
        from_mask(image, empty, empty)
    other_grid = make_phantom(size=(12, 10, 9))
    with pytest.raises(InputError, match="geometry differs"):
        from_slices(image, _labels_like(other_grid, np.ones((9, 10, 12))), [SliceRef("k", 1)])


def test_suggestions_pick_the_most_uncertain_slices_and_spread_out() -> None:
    uncertainty = np.zeros((20, 10, 10), np.float32)
    uncertainty[7] = 0.9
    uncertainty[8] = 0.8  # next to 7: skipped with min_gap 3
    uncertainty[15] = 0.5
    uncertainty[2] = 1.0  # already annotated
    picks = suggest_slices(uncertainty, annotated=[SliceRef("k", 2)], count=2, axes=["k"])
    assert [index for index, _ in picks["k"]] == [7, 15]
    assert picks["k"][0][1] == pytest.approx(0.9)


def test_user_model_versions(tmp_path, tiny_model_dir) -> None:
    registry = ModelRegistry(bundled=tiny_model_dir.parent, user=tmp_path / "user")
    first, version = next_user_model_folder("liver", registry)
    assert (first.name, version) == ("liver", 1)
    first.mkdir(parents=True)
    second, version = next_user_model_folder("liver", registry)
    assert (second.name, version) == ("liver-v2", 2)
    with pytest.raises(ModelError, match="taken by a bundled model"):
        next_user_model_folder("tiny-test", registry)
    with pytest.raises(ModelError, match="use letters"):
        next_user_model_folder("../escape", registry)
