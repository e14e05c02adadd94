"""The cheap candidates: region growing (6 and 26 neighbours) and interpolation, scored on held-out slices.

They need no training, so they are ready in seconds and make the first answer. A held-out slice,
predicted from the other slices, tells which of them to trust per structure. Each structure is
scored on a slice it is *interior* to (other slices label it on both sides, see
``held_out.interior_classes``): the network's held-out slice where that holds, so the network
is compared on the same voxels; else the structure's own middle slice (cheap methods only).
Where no such slice exists (one slice per structure), 26-neighbour growing is the cheap default:
on dev tasks it was the best cheap candidate with one slice on 4 of 5 tasks
(``benchmarks/sparse/dev_candidates.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..progress import CancelToken, ProgressCallback, no_progress
from .annotations import SliceRef, SparseAnnotation
from .growing import GrowingGraph, growing_region
from .held_out import class_held_out, interior_classes
from .interpolation import interpolated_labels
from .scoring import class_dice_on, held_out_voxels

GROWING = "region growing"  # 6 neighbours: faces only
GROWING_26 = "region growing, 26 neighbours"
INTERPOLATION = "interpolation"
_CONNECTIVITY = {GROWING: 6, GROWING_26: 26}
DEFAULT = GROWING_26  # the cheap choice where nothing was measured
SMALL_REGION = 2_500_000  # voxels: 6-neighbour growing is tried only below this (it won only on small structures)

Scores = dict[str, dict[int, float]]  # candidate name -> class value -> Dice on its held-out slice


@dataclass
class Candidates:
    labels: dict[str, np.ndarray]  # name -> dense (k, j, i) labels from the whole annotation
    shared: Scores = field(default_factory=dict)  # on the network's held-out slice (its interior classes)
    own: Scores = field(default_factory=dict)  # on each other class's own interior slice

    def scored(self, value: int) -> dict[str, float]:
        """The candidates' Dice for class ``value``: on the shared slice if it was scored there, else its own."""
        for scores in (self.shared, self.own):
            found = {name: by_class[value] for name, by_class in scores.items() if value in by_class}
            if found:
                return found
        return {}

    def shared_for(self, value: int) -> dict[str, float]:
        """The candidates' Dice for class ``value`` on the network's held-out slice ({} if not scored there)."""
        return {name: by_class[value] for name, by_class in self.shared.items() if value in by_class}

    def best(self, value: int) -> str:
        """The best cheap candidate for class ``value`` (the first listed wins a tie; ``DEFAULT`` unscored)."""
        found = self.scored(value)
        return max(found, key=lambda name: found[name]) if found else DEFAULT

    def record(self, values: Sequence[int], names: dict[int, str]) -> dict[str, dict[str, dict[str, float]]]:
        """For the model card: every score, by slice kind, candidate and structure name."""
        return {kind: {name: {names[v]: round(d, 4) for v, d in by_class.items()} for name, by_class in scores.items()}
                for kind, scores in (("network_held_out_slice", self.shared), ("own_held_out_slice", self.own))}


def cheap_candidates(image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float],
                     values: Sequence[int], held_out: SliceRef | None, progress: ProgressCallback = no_progress,
                     cancel: CancelToken | None = None) -> Candidates:
    """Every cheap candidate from ``annotation``, and each scored per class from the other slices."""
    cancel = cancel or CancelToken()
    # Which classes are scored on which slice: the network's held-out slice first.
    slices: dict[SliceRef, list[int]] = {}
    shared = [v for v in values if held_out is not None and v in interior_classes(annotation, held_out)]
    if shared:
        slices[held_out] = shared
    for value in values:
        if value not in shared and (own := class_held_out(annotation, value)) is not None:
            slices.setdefault(own, []).append(value)
    candidates = Candidates({})
    graphs = {}
    region_voxels = np.prod([s.stop - s.start for s in growing_region(annotation)])
    for name, connectivity in _CONNECTIVITY.items():
        if connectivity == 6 and region_voxels > SMALL_REGION:
            continue
        graph = GrowingGraph(image, annotation, spacing_ijk, connectivity)
        progress(0.0, f"{name} from the annotated voxels")
        candidates.labels[name] = graph.grow(annotation)
        graphs[name] = graph
        cancel.raise_if_cancelled()
    candidates.labels[INTERPOLATION] = interpolated_labels(annotation, values, spacing_ijk)
    for ref, classes in slices.items():
        rest, where = annotation.without(ref), held_out_voxels(annotation, ref)
        scores = candidates.shared if ref == held_out else candidates.own
        predicted = {name: graph.grow(rest) for name, graph in graphs.items()}
        predicted[INTERPOLATION] = interpolated_labels(rest, classes, spacing_ijk)
        for name, labels in predicted.items():
            scores.setdefault(name, {}).update(zip(classes, class_dice_on(labels, annotation, where, classes)))
        cancel.raise_if_cancelled()
    return candidates
