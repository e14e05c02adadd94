"""Per structure: the network or region growing, whichever predicts the held-out slice better.

The best method differs per structure (a deep nucleus with no edge to its neighbours, bone with
a sharp one); the user's own held-out slice tells which, with no reference data. Region growing
is grown again from the other slices to be scored, so neither candidate has seen the slice
(the network's score is its best held-out Dice during training, which favours it slightly: a
structure goes to region growing only when that scores strictly higher).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..metrics.overlap import overlap_metrics
from .annotations import SliceRef, SparseAnnotation

NETWORK, GROWING = "network", "region growing"


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


def choose(network_dice: Sequence[float] | None, growing_dice: Sequence[float] | None,
           values: Sequence[int]) -> dict[int, str]:
    """The candidate per class value: region growing only where it scores strictly higher."""
    if network_dice is None or growing_dice is None:
        return {value: NETWORK for value in values}
    return {value: GROWING if g > n else NETWORK for value, n, g in zip(values, network_dice, growing_dice)}


def compose(network_labels: np.ndarray, grown: np.ndarray, choices: dict[int, str]) -> np.ndarray:
    """The network's labels, with each class chosen for region growing replaced by its grown mask."""
    result = network_labels.copy()
    chosen = [value for value, how in choices.items() if how == GROWING]
    for value in chosen:
        result[result == value] = 0
    for value in chosen:
        result[(grown == value) & ((result == 0) | np.isin(result, chosen))] = value
    return result
