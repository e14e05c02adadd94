"""Shape-based interpolation between annotated parallel slices, fused with the network's probabilities.

Between two annotated slices of one axis, a structure's shape is known well: each slice's
signed distance map (negative inside, in mm) is interpolated linearly along the axis (Raya and
Udupa 1990), so an outline morphs into the next. A structure missing from one of the two slices
ends halfway between them. Beyond the outermost slices interpolation says nothing.

The network knows what the slices do not: appearance, and where a structure goes beyond the
slices. Where interpolation has something to say, the two are averaged as probabilities (each
axis that covers the voxel counting as one vote beside the network); elsewhere the network
decides alone. Voxels covered by no pair of slices are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..metrics.overlap import overlap_metrics
from .annotations import VOXEL_AXES, SliceRef, SparseAnnotation

SOFTNESS_MM = 1.0  # signed distance -> probability: sigmoid(-distance / SOFTNESS_MM)


def _plane(axis: int, index: int) -> tuple[slice | int, ...]:
    where: list[slice | int] = [slice(None)] * 3
    where[axis] = index
    return tuple(where)


def signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """2D signed distance (mm) to the mask's outline: negative inside, positive outside."""
    if not mask.any():
        return np.full(mask.shape, np.inf, dtype=np.float32)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    return (outside - inside).astype(np.float32)


def _pair(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Two slices' signed distances, ready to interpolate: a structure missing from one slice gets
    a constant there that ends it halfway (its deepest inside distance); None when both lack it."""
    first_empty, second_empty = bool(np.isinf(first).all()), bool(np.isinf(second).all())
    if first_empty and second_empty:
        return None
    if first_empty:
        first = np.full_like(second, -float(second.min()))
    if second_empty:
        second = np.full_like(first, -float(first.min()))
    return first, second


def interpolated_probabilities(annotation: SparseAnnotation, values: Sequence[int],
                               spacing_ijk: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis votes from shape interpolation: probabilities summed over axes (C + 1, k, j, i) and
    how many axes vote at each voxel (k, j, i). Channel 0 is background, channel n is ``values[n - 1]``."""
    shape = annotation.labels.shape
    votes = np.zeros((len(values) + 1, *shape), dtype=np.float32)
    count = np.zeros(shape, dtype=np.uint8)
    spacing_kji = tuple(spacing_ijk[::-1])
    for axis_name in VOXEL_AXES:
        refs = sorted((ref for ref in annotation.slices if ref.axis == axis_name), key=lambda ref: ref.index)
        if len(refs) < 2:
            continue
        axis = refs[0].array_axis
        in_plane = [s for a, s in enumerate(spacing_kji) if a != axis]
        distances = {ref: [signed_distance(annotation.labels[_plane(axis, ref.index)] == value, in_plane)
                           for value in values] for ref in refs}
        for low, high in zip(refs, refs[1:]):
            pairs = [_pair(a, b) for a, b in zip(distances[low], distances[high])]
            for index in range(low.index + 1, high.index):
                t = (index - low.index) / (high.index - low.index)
                plane = _plane(axis, index)
                foreground = np.zeros((len(values), *annotation.labels[plane].shape), dtype=np.float32)
                for channel, pair in enumerate(pairs):
                    if pair is not None:
                        distance = (1.0 - t) * pair[0] + t * pair[1]
                        foreground[channel] = 1.0 / (1.0 + np.exp(np.clip(distance / SOFTNESS_MM, -50, 50)))
                background = np.clip(1.0 - foreground.sum(axis=0), 0.0, 1.0)
                probabilities = np.concatenate([background[None], foreground])
                probabilities /= np.maximum(probabilities.sum(axis=0, keepdims=True), 1e-6)
                votes[(slice(None), *plane)] += probabilities
                count[plane] += 1
    return votes, count


def fuse_with_interpolation(probabilities: np.ndarray, annotation: SparseAnnotation, values: Sequence[int],
                            spacing_ijk: Sequence[float]) -> np.ndarray:
    """The network's probabilities (C + 1, k, j, i) averaged with interpolation's votes where it has any."""
    votes, count = interpolated_probabilities(annotation, values, spacing_ijk)
    if not count.any():
        return probabilities
    return (probabilities + votes) / (1.0 + count)[None]


def interpolated_labels(annotation: SparseAnnotation, values: Sequence[int], spacing_ijk: Sequence[float]) -> np.ndarray:
    """Interpolation alone as (k, j, i) labels: background where no pair of slices encloses a voxel."""
    votes, count = interpolated_probabilities(annotation, values, spacing_ijk)
    labels = np.asarray([0, *values], dtype=annotation.labels.dtype)[np.argmax(votes, axis=0)]
    labels[count == 0] = 0
    labels[annotation.known] = annotation.labels[annotation.known]
    return labels


def interpolation_held_out_dice(annotation: SparseAnnotation, held_out: SliceRef, values: Sequence[int],
                                spacing_ijk: Sequence[float]) -> float | None:
    """Mean Dice over the classes of interpolation alone on the held-out slice, interpolated from the
    other slices (None when no pair of them encloses it): the same measure as the network's held-out Dice."""
    rest = annotation.without(held_out)
    votes, count = interpolated_probabilities(rest, values, spacing_ijk)
    plane = list(_plane(held_out.array_axis, held_out.index))
    covered = (count[tuple(plane)] > 0) & annotation.known[tuple(plane)]
    if not covered.any():
        return None
    labels = annotation.labels[tuple(plane)][covered].astype(np.int64)
    channel_of = np.zeros(max(int(labels.max()), *values) + 1, dtype=np.int64)
    channel_of[list(values)] = np.arange(1, len(values) + 1)
    reference = channel_of[labels]
    predicted = np.argmax(votes[(slice(None), *plane)], axis=0)[covered]
    return float(np.mean([overlap_metrics(predicted == c, reference == c).dice for c in range(1, len(values) + 1)]))
