"""The held-out slice: which annotated slice to keep aside, and the Dice on it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..inference.sliding_window import WindowSettings, sliding_window_probabilities
from ..metrics.overlap import overlap_metrics
from ..models.card import ModelCard
from ..networks import UNet3D
from .annotations import SliceRef, SparseAnnotation


def _slice_classes(annotation: SparseAnnotation, ref: SliceRef) -> set[int]:
    index = [slice(None)] * 3
    index[ref.array_axis] = ref.index
    plane = tuple(index)
    return set(np.unique(annotation.labels[plane][annotation.known[plane]]).tolist()) - {0}


def slice_classes(annotation: SparseAnnotation, ref: SliceRef) -> set[int]:
    """The foreground classes labelled on slice ``ref``."""
    return _slice_classes(annotation, ref)


def interior_classes(annotation: SparseAnnotation, ref: SliceRef) -> set[int]:
    """The classes on ``ref`` that other slices of its axis label on both sides of it: the slice a
    method predicts from them by bridging, not by extrapolating past a structure's last slice."""
    classes = _slice_classes(annotation, ref)
    parallel = [other for other in annotation.slices if other.axis == ref.axis and other != ref]
    below = set().union(*(_slice_classes(annotation, o) for o in parallel if o.index < ref.index))
    above = set().union(*(_slice_classes(annotation, o) for o in parallel if o.index > ref.index))
    return classes & below & above


def class_held_out(annotation: SparseAnnotation, value: int, preferred: SliceRef | None = None) -> SliceRef | None:
    """For one class, the slice to score methods on: one it is interior to (``preferred`` if it is one,
    else the middlemost); failing that (1+1+1 orthogonal slices) one whose removal leaves the class
    two others; else none."""
    inner = [ref for ref in annotation.slices if value in interior_classes(annotation, ref)]
    if inner:
        if preferred in inner:
            return preferred
        along = sorted(ref.index for ref in inner)
        middle = along[len(along) // 2]
        return min(inner, key=lambda ref: (abs(ref.index - middle), ref.index))
    classes_on = {ref: _slice_classes(annotation, ref) for ref in annotation.slices}
    eligible = [ref for ref in annotation.slices if value in classes_on[ref]
                and sum(value in classes_on[other] for other in annotation.slices if other != ref) >= 2]
    if preferred in eligible:
        return preferred
    return eligible[0] if eligible else None


def choose_held_out(annotation: SparseAnnotation) -> SliceRef | None:
    """A slice whose every class is also on two or more other slices, inside as many classes as
    possible (``interior_classes``); among those a middle slice of the most-used axis first, else
    any (1+1+1 orthogonal slices: one axis's slice, the other two still label it).

    Holding out a structure's second slice would leave it one to learn from: the check would cost
    more than it tells (with several structures, few slices each, that is the common case).
    """
    if len(annotation.slices) < 3:
        return None
    axes = [ref.axis for ref in annotation.slices]
    axis = max(set(axes), key=axes.count)
    along = sorted((ref for ref in annotation.slices if ref.axis == axis), key=lambda ref: ref.index)
    middle_first = sorted(along[1:-1], key=lambda ref: abs(along.index(ref) - len(along) // 2))
    order = middle_first + [ref for ref in annotation.slices if ref not in middle_first]
    classes_on = {ref: _slice_classes(annotation, ref) for ref in annotation.slices}
    allowed = []
    for candidate in order:
        rest = [classes_on[ref] for ref in annotation.slices if ref != candidate]
        if classes_on[candidate] and all(sum(value in other for other in rest) >= 2
                                         for value in classes_on[candidate]):
            allowed.append(candidate)
    if not allowed:
        return None
    return max(allowed, key=lambda ref: (len(interior_classes(annotation, ref)), -allowed.index(ref)))


def held_out_dice(network: UNet3D, image: np.ndarray, target: np.ndarray, validation: np.ndarray,
                   card: ModelCard, device: torch.device) -> float:
    """Mean Dice over the classes on the held-out voxels, predicting only a slab around them."""
    return float(np.mean(held_out_class_dice(network, image, target, validation, card, device)))


def held_out_class_dice(network: UNet3D, image: np.ndarray, target: np.ndarray, validation: np.ndarray,
                        card: ModelCard, device: torch.device) -> list[float]:
    """Each class's Dice on the held-out voxels (class order of the card)."""
    network.eval()
    box = _slab_around(validation, card.window_size[::-1])
    probabilities = sliding_window_probabilities(
        network, image[(slice(None), *box)], WindowSettings(tuple(card.window_size[::-1]), overlap=0.25), device
    )
    prediction = np.argmax(probabilities, axis=0)
    mask = validation[box]
    reference = target[box][mask]
    predicted = prediction[mask]
    classes = range(1, card.num_classes)
    return [float(overlap_metrics(predicted == c, reference == c).dice) for c in classes]


def _slab_around(mask: np.ndarray, window: Sequence[int]) -> tuple[slice, ...]:
    present = np.argwhere(mask)
    low, high = present.min(axis=0), present.max(axis=0) + 1
    box = []
    for axis, (a, b) in enumerate(zip(low, high)):
        size = mask.shape[axis]
        if b - a < window[axis]:
            centre = (a + b) // 2
            a = max(0, min(centre - window[axis] // 2, size - window[axis]))
            b = min(size, a + window[axis])
        box.append(slice(int(a), int(b)))
    return tuple(box)
