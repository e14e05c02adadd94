"""Per structure: the network or a cheap candidate, whichever predicts a held-out slice best.

The best method differs per structure (a deep nucleus with no edge to its neighbours, bone with
a sharp one, a thin folded sheet, a smooth shape between close slices); the user's own held-out
slice tells which, with no reference data. The cheap candidates (candidates.py) are scored from
the other slices, so none has seen the slice (the network's score is its best held-out Dice
during training, which favours it slightly: a structure leaves the network only for a candidate
that scores strictly higher).

Where the network was not scored on a structure (its held-out slice does not lie inside the
structure's slices, or there is none), it keeps the structures a base model already knew and
gives the others to the best cheap candidate: on dev tasks a network trained from scratch in one
round lost to it on 4 of 5 tasks with one slice (``benchmarks/results/sparse_dev.md``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from .candidates import Candidates

NETWORK = "network"


def step_budget(classes: int) -> int:
    """Training steps for a problem of ``classes`` structures: what fits 120 s on 2 quiet cores
    (measured ~1 step/s with the default network), so the time budget is only a cap."""
    return min(200, 80 + 5 * classes)


def choose(network_dice: dict[int, float], candidates: Candidates, values: Sequence[int],
           known_to_base: Collection[int]) -> dict[int, str]:
    """The method per class value. Scored on the network's slice: the network unless a candidate
    scores strictly higher there. Not scored there: the network for a class the base model knew,
    else the best cheap candidate."""
    choices = {}
    for value in values:
        if value in network_dice and (shared := candidates.shared_for(value)):
            best = max(shared, key=lambda name: shared[name])
            choices[value] = best if shared[best] > network_dice[value] else NETWORK
        else:
            choices[value] = NETWORK if value in known_to_base else candidates.best(value)
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


def first_answer(candidates: Candidates, values: Sequence[int]) -> tuple[np.ndarray, dict[int, str]]:
    """Before any training: per class the best cheap candidate."""
    choices = {value: candidates.best(value) for value in values}
    empty = np.zeros_like(next(iter(candidates.labels.values())))
    return compose(empty, candidates.labels, choices), choices
