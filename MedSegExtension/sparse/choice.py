"""Per structure: the network, region growing or interpolation, whichever predicts the held-out slice best.

The best method differs per structure (a deep nucleus with no edge to its neighbours, bone with
a sharp one, a smooth shape between close slices); the user's own held-out slice tells which,
with no reference data. Region growing and interpolation are computed again from the other
slices to be scored, so no candidate has seen the slice (the network's score is its best
held-out Dice during training, which favours it slightly: a structure leaves the network only
for a candidate that scores strictly higher).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics.overlap import overlap_metrics
from .annotations import SliceRef, SparseAnnotation
from .growing import grow_labels
from .interpolation import interpolated_labels

NETWORK, GROWING, INTERPOLATION = "network", "region growing", "interpolation"


def step_budget(classes: int) -> int:
    """Training steps for a problem of ``classes`` structures: what fits 120 s on 2 quiet cores
    (measured ~1 step/s with the default network), so the time budget is only a cap."""
    return min(200, 80 + 5 * classes)


def held_out_voxels(annotation: SparseAnnotation, held_out: SliceRef) -> np.ndarray:
    """(k, j, i) bool: the voxels only the held-out slice labels."""
    return annotation.known & ~annotation.without(held_out).known


def class_dice_on(labels: np.ndarray, annotation: SparseAnnotation, where: np.ndarray,
                  values: Sequence[int]) -> list[float]:
    """Each class's Dice of ``labels`` against the annotation on the voxels ``where``."""
    reference, predicted = annotation.labels[where], labels[where]
    return [float(overlap_metrics(predicted == v, reference == v).dice) for v in values]


def choose(network_dice: Sequence[float] | None, others: dict[str, Sequence[float]],
           values: Sequence[int]) -> dict[int, str]:
    """The candidate per class value: another than the network only where it scores strictly higher
    (the first listed wins a tie between others); the network wherever nothing was measured."""
    if network_dice is None:
        return {value: NETWORK for value in values}
    choices = {}
    for index, value in enumerate(values):
        best, score = NETWORK, network_dice[index]
        for name, dice in others.items():
            if dice[index] > score:
                best, score = name, dice[index]
        choices[value] = best
    return choices


def compose(network_labels: np.ndarray, candidates: dict[str, np.ndarray], choices: dict[int, str]) -> np.ndarray:
    """The network's labels, with each class chosen for another candidate replaced by that candidate's mask."""
    result = network_labels.copy()
    chosen = [value for value, how in choices.items() if how != NETWORK]
    for value in chosen:
        result[result == value] = 0
    for value in chosen:
        mask = candidates[choices[value]] == value
        result[mask & ((result == 0) | np.isin(result, chosen))] = value
    return result


def choose_and_compose(network_labels: np.ndarray, image: np.ndarray, spacing_ijk: Sequence[float],
                       annotation: SparseAnnotation, held_out: SliceRef, values: Sequence[int],
                       network_dice: Sequence[float] | None, grown: np.ndarray
                       ) -> tuple[np.ndarray, dict[int, str], dict[str, list[float]]]:
    """Score region growing and interpolation on the held-out slice from the other slices, choose per
    class against the network's ``network_dice``, and compose: (labels, choices, the scores for the card)."""
    rest, where = annotation.without(held_out), held_out_voxels(annotation, held_out)
    scores = {GROWING: class_dice_on(grow_labels(image, rest, spacing_ijk), annotation, where, values),
              INTERPOLATION: class_dice_on(interpolated_labels(rest, values, spacing_ijk), annotation, where, values)}
    choices = choose(network_dice, scores, values)
    labels = network_labels
    if set(choices.values()) != {NETWORK}:
        candidates = {GROWING: grown, INTERPOLATION: interpolated_labels(annotation, values, spacing_ijk)}
        labels = compose(network_labels, candidates, choices)
    record = {"network_held_out_class_dice": [round(d, 4) for d in network_dice or []],
              "region_growing_held_out_dice": [round(d, 4) for d in scores[GROWING]],
              "interpolation_held_out_class_dice": [round(d, 4) for d in scores[INTERPOLATION]]}
    return labels, choices, record
