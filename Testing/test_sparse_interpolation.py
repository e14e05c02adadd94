"""Shape-based interpolation between annotated slices, and its fusion with the network."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MedSegExtension.sparse.annotations import SliceRef, from_slices
from MedSegExtension.sparse.interpolation import (
    fuse_with_interpolation,
    interpolated_probabilities,
    interpolation_held_out_dice,
    signed_distance,
)


def ball_volume() -> tuple[sitk.Image, np.ndarray]:
    k, j, i = np.meshgrid(*(np.arange(32),) * 3, indexing="ij")
    left = ((i - 10) ** 2 + (j - 16) ** 2 + (k - 16) ** 2) < 7**2
    right = ((i - 24) ** 2 + (j - 16) ** 2 + (k - 16) ** 2) < 4**2
    truth = (left * 1 + right * 2).astype(np.uint8)
    image = sitk.GetImageFromArray(np.zeros(truth.shape, dtype=np.float32))
    return image, truth


def annotation_on(slices: list[SliceRef]):
    image, truth = ball_volume()
    labels = sitk.GetImageFromArray(truth)
    labels.CopyInformation(image)
    return from_slices(image, labels, slices), truth


def test_signed_distance_is_negative_inside_and_in_millimetres() -> None:
    mask = np.zeros((9, 9), dtype=bool)
    mask[3:6, 3:6] = True
    distance = signed_distance(mask, (2.0, 1.0))
    assert distance[4, 4] < 0 < distance[0, 4]
    assert distance[0, 4] == 2 * 3.0 and distance[4, 0] == 3.0  # rows 2 mm apart, columns 1 mm
    assert np.isinf(signed_distance(np.zeros((4, 4), dtype=bool), (1.0, 1.0))).all()


def test_interpolation_between_slices_recovers_the_ball_between_them() -> None:
    annotation, truth = annotation_on([SliceRef("k", 10), SliceRef("k", 16), SliceRef("k", 22)])
    votes, count = interpolated_probabilities(annotation, [1, 2], (1.0, 1.0, 1.0))
    assert count[11:16].all() and count[17:22].all()
    assert not count[:10].any() and not count[23:].any() and not count[[10, 16, 22]].any()  # slices themselves: known
    shape = np.argmax(votes, axis=0)
    between = np.r_[11:16, 17:22]
    left_shape, left_truth = shape[between] == 1, truth[between] == 1
    dice = 2 * (left_shape & left_truth).sum() / (left_shape.sum() + left_truth.sum())
    assert dice > 0.85
    # The right ball is on k:16 only: it fades out halfway towards k:10 and k:22.
    assert (shape[15] == 2).any() and not (shape[12] == 2).any() and not (shape[20] == 2).any()


def test_fusion_averages_where_interpolation_speaks_and_leaves_the_rest() -> None:
    annotation, truth = annotation_on([SliceRef("k", 12), SliceRef("k", 20)])
    network = np.zeros((3, *truth.shape), dtype=np.float32)
    network[0] = 1.0  # a network that sees nothing
    fused = fuse_with_interpolation(network, annotation, [1, 2], (1.0, 1.0, 1.0))
    assert np.allclose(fused.sum(axis=0), 1.0, atol=1e-5)
    assert np.array_equal(fused[:, :12], network[:, :12]) and np.array_equal(fused[:, 21:], network[:, 21:])
    centre = fused[:, 16, 16, 10]
    assert np.isclose(centre[0], 0.5, atol=0.01) and np.isclose(centre[1], 0.5, atol=0.01)
    no_slices = from_slices(*[sitk.GetImageFromArray(a) for a in (np.zeros((4, 4, 4), np.float32),
                                                                   np.ones((4, 4, 4), np.uint8))], [SliceRef("k", 1)])
    alone = np.random.default_rng(0).random((2, 4, 4, 4)).astype(np.float32)
    assert fuse_with_interpolation(alone, no_slices, [1], (1.0, 1.0, 1.0)) is alone


def test_held_out_dice_of_interpolation_scores_the_slice_from_its_neighbours() -> None:
    near, truth = annotation_on([SliceRef("k", 14), SliceRef("k", 16), SliceRef("k", 18)])
    far, _ = annotation_on([SliceRef("k", 10), SliceRef("k", 16), SliceRef("k", 22)])
    close = interpolation_held_out_dice(near, SliceRef("k", 16), [1, 2], (1.0, 1.0, 1.0))
    distant = interpolation_held_out_dice(far, SliceRef("k", 16), [1, 2], (1.0, 1.0, 1.0))
    # Close neighbours predict the middle of both balls well; far ones miss the small ball entirely.
    assert close > 0.8 and distant < 0.6
    unpaired, _ = annotation_on([SliceRef("k", 10), SliceRef("k", 16)])
    assert interpolation_held_out_dice(unpaired, SliceRef("k", 16), [1, 2], (1.0, 1.0, 1.0)) is None
