"""The cheap candidates: region growing (6 and 26 neighbours), an intensity model, the bundled
propagation network (``propagation.py``, when installed) and interpolation, scored on held-out slices.

They need no training, so they are ready in seconds and make the first answer. A held-out slice,
predicted from the other slices, tells which of them to trust per structure. Each structure is
scored on a slice it is *interior* to where it has one (other slices label it on both sides, see
``held_out.class_held_out``), else on one whose removal leaves it two others (1+1+1 slices): the
network's held-out slice where that serves, so the network is compared on the same voxels; else
the structure's own slice (cheap methods only).
Where no such slice exists (one slice per structure), the intensity model is taken if it explains
the structure's own annotated voxels (Dice >= ``INTENSITY_FIT``: on the dev split 0.93–0.99 where
intensity defines the structure, 0.00 for nuclei, gyri and tracts), else 26-neighbour growing: on
dev tasks the best cheap candidate with one slice on 4 of 5 tasks (``benchmarks/sparse/dev_candidates.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..progress import CancelToken, ProgressCallback, no_progress
from .annotations import SliceRef, SparseAnnotation
from .growing import GrowingGraph, growing_region
from .held_out import class_held_out
from .intensity import intensity_labels
from .interpolation import interpolated_labels
from .propagation import propagate
from .propagation_model import bundled_propagation_model
from .scoring import class_dice_on, held_out_voxels

GROWING = "region growing"  # 6 neighbours: faces only
GROWING_26 = "region growing, 26 neighbours"
INTERPOLATION = "interpolation"
INTENSITY = "intensity model"
PROPAGATION = "propagation network"
INTENSITY_FIT = 0.9
_CONNECTIVITY = {GROWING: 6, GROWING_26: 26}
DEFAULT = GROWING_26  # the cheap choice where nothing was measured
SMALL_REGION = 2_500_000  # voxels: 6-neighbour growing is tried only below this (it won only on small structures)

Scores = dict[str, dict[int, float]]  # candidate name -> class value -> Dice on its held-out slice


@dataclass
class Candidates:
    labels: dict[str, np.ndarray]  # name -> dense (k, j, i) labels from the whole annotation
    shared: Scores = field(default_factory=dict)  # on the network's held-out slice (its interior classes)
    own: Scores = field(default_factory=dict)  # on each other class's own interior slice
    intensity_fit: dict[int, float] = field(default_factory=dict)  # the intensity model's Dice on the annotation

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
        if found:
            return max(found, key=lambda name: found[name])
        return INTENSITY if self.intensity_fit.get(value, 0.0) >= INTENSITY_FIT else DEFAULT

    def record(self, values: Sequence[int], names: dict[int, str]) -> dict[str, dict[str, dict[str, float]]]:
        """For the model card: every score, by slice kind, candidate and structure name."""
        record = {kind: {name: {names[v]: round(d, 4) for v, d in by_class.items()} for name, by_class in scores.items()}
                  for kind, scores in (("network_held_out_slice", self.shared), ("own_held_out_slice", self.own))}
        record["intensity_fit_on_annotation"] = {names[v]: round(d, 4) for v, d in self.intensity_fit.items()}
        return record


def cheap_candidates(image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float],
                     values: Sequence[int], held_out: SliceRef | None, progress: ProgressCallback = no_progress,
                     cancel: CancelToken | None = None) -> Candidates:
    """Every cheap candidate from ``annotation``, and each scored per class from the other slices."""
    cancel = cancel or CancelToken()
    # Which classes are scored on which slice: the network's held-out slice wherever it serves.
    slices: dict[SliceRef, list[int]] = {}
    for value in values:
        if (ref := class_held_out(annotation, value, preferred=held_out)) is not None:
            slices.setdefault(ref, []).append(value)
    candidates = Candidates({})
    graphs = {}
    region = growing_region(annotation)  # the cheap methods' box
    region_voxels = np.prod([s.stop - s.start for s in region])
    for name, connectivity in _CONNECTIVITY.items():
        if connectivity == 6 and region_voxels > SMALL_REGION:
            continue
        graph = GrowingGraph(image, annotation, spacing_ijk, connectivity)
        progress(0.0, f"{name} from the annotated voxels")
        candidates.labels[name] = graph.grow(annotation)
        graphs[name] = graph
        cancel.raise_if_cancelled()
    candidates.labels[INTENSITY], candidates.intensity_fit = intensity_labels(image, annotation, region, values)
    propagation = bundled_propagation_model()  # None where it is not installed: the candidate is left out
    if propagation is not None:
        progress(0.0, f"{PROPAGATION} from the annotated slices")
        candidates.labels[PROPAGATION] = propagate(image, annotation, spacing_ijk, values, model=propagation,
                                                   cancel=cancel)
    candidates.labels[INTERPOLATION] = interpolated_labels(annotation, values, spacing_ijk)
    for ref, classes in slices.items():
        rest, where = annotation.without(ref), held_out_voxels(annotation, ref)
        scores = candidates.shared if ref == held_out else candidates.own
        predicted = {name: graph.grow(rest) for name, graph in graphs.items()}
        predicted[INTENSITY], _ = intensity_labels(image, rest, region, values)
        if propagation is not None:
            predicted[PROPAGATION] = propagate(image, rest, spacing_ijk, classes, model=propagation, cancel=cancel)
        predicted[INTERPOLATION] = interpolated_labels(rest, classes, spacing_ijk)
        for name, labels in predicted.items():
            scores.setdefault(name, {}).update(zip(classes, class_dice_on(labels, annotation, where, classes)))
        cancel.raise_if_cancelled()
    return candidates
