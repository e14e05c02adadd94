"""Region growing, the per-structure choice by the held-out slice, and the problem-set step budget."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import numpy as np
import SimpleITK as sitk
from test_sparse_finetune import FAST, INFO, labels_on, two_balls

from MedSegExtension.metrics.overlap import overlap_metrics
from MedSegExtension.sparse.annotations import SliceRef, SparseAnnotation, from_slices
from MedSegExtension.sparse.candidates import (
    DEFAULT,
    GROWING,
    GROWING_26,
    INTENSITY,
    INTENSITY_FIT,
    INTERPOLATION,
    PROPAGATION,
    Candidates,
    cheap_candidates,
)
from MedSegExtension.sparse.choice import NETWORK, choose, compose, step_budget
from MedSegExtension.sparse.finetune import fine_tune
from MedSegExtension.sparse.growing import grow_labels, growing_region
from MedSegExtension.sparse.held_out import choose_held_out
from MedSegExtension.sparse.scoring import class_dice_on, held_out_voxels

SLICES = [SliceRef("k", 14), SliceRef("k", 16), SliceRef("k", 18)]


def test_region_growing_recovers_bright_balls_from_two_slices_and_keeps_the_drawn_voxels() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 13), SliceRef("k", 19)])
    grown = grow_labels(sitk.GetArrayFromImage(image), annotation, image.GetSpacing())
    for value in (1, 2):
        assert overlap_metrics(grown == value, truth == value).dice > 0.85
    assert np.array_equal(grown[annotation.known], annotation.labels[annotation.known])


def test_region_growing_on_a_coarser_grid_keeps_seeds_of_slices_between_coarse_planes(monkeypatch) -> None:
    import MedSegExtension.sparse.growing as growing

    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 13), SliceRef("k", 19)])
    # A budget that forces a coarse grid: k 13 and 19 are odd planes.
    monkeypatch.setattr(growing, "MAX_GRAPH_BYTES", growing.graph_bytes((17, 17, 17), 6))
    graph = growing.GrowingGraph(sitk.GetArrayFromImage(image), annotation, image.GetSpacing())
    assert max(graph.factors) > 1
    grown = graph.grow(annotation)
    assert overlap_metrics(grown == 1, truth == 1).dice > 0.7


def test_region_growing_with_26_neighbours_follows_an_oblique_sheet_that_6_neighbours_lose() -> None:
    """A one-voxel-thick bright sheet at i == j, labelled on the plane j = 5 only: off that plane the
    sheet continues diagonally, which only a corner (26-neighbour) step follows without crossing dark."""
    image = np.zeros((12, 16, 16), dtype=np.float32)
    truth = np.zeros(image.shape, dtype=np.uint8)
    for n in range(16):
        image[:, n, n], truth[:, n, n] = 1.0, 1
    itk = sitk.GetImageFromArray(image)
    annotation = from_slices(itk, sitk.GetImageFromArray(truth), [SliceRef("j", 5)])
    region = growing_region(annotation)  # the labelled column's box, grown 3 voxels: i, j in 2..8
    dice = {c: overlap_metrics(grow_labels(image, annotation, (1, 1, 1), c)[region] == 1, truth[region] == 1).dice
            for c in (6, 26)}
    assert dice[26] > 0.9 and dice[6] < 0.5, dice


def test_choice_goes_to_the_candidate_that_predicts_the_held_out_slice_better() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    where = held_out_voxels(annotation, SliceRef("k", 16))
    assert where[16].all() and not where[14].any()
    good = truth.copy()
    bad = np.roll(truth, 5, axis=2)  # shifted: wrong on the held-out slice
    good_dice, bad_dice = (dict(zip([1, 2], class_dice_on(c, annotation, where, [1, 2]))) for c in (good, bad))
    assert min(good_dice.values()) > 0.99 > max(bad_dice.values())
    candidates = Candidates({GROWING: good}, shared={GROWING: good_dice})
    assert choose(bad_dice, candidates, [1, 2], known_to_base=()) == {1: GROWING, 2: GROWING}
    assert choose(good_dice, Candidates({GROWING: bad}, shared={GROWING: bad_dice}), [1, 2], ()) == \
        {1: NETWORK, 2: NETWORK}
    # A tie stays with the network; the best of several others wins.
    several = Candidates({}, shared={GROWING: {1: 0.8, 2: 0.9}, INTERPOLATION: {1: 0.85, 2: 0.2}})
    assert choose({1: 0.5, 2: 0.9}, several, [1, 2], ()) == {1: INTERPOLATION, 2: NETWORK}
    # Not scored on the network's slice: the network keeps what the base model knew, the rest goes
    # to the best cheap candidate on its own slice, else to the default.
    own = Candidates({}, own={GROWING: {1: 0.7}, INTERPOLATION: {1: 0.9}})
    assert choose({}, own, [1, 2], known_to_base={2}) == {1: INTERPOLATION, 2: NETWORK}
    assert choose({}, own, [1, 2], known_to_base=()) == {1: INTERPOLATION, 2: DEFAULT}
    composed = compose(bad, {GROWING: good}, {1: GROWING, 2: NETWORK})
    assert np.array_equal(composed == 1, good == 1)
    assert np.array_equal(composed == 2, (bad == 2) & (good != 1))


def test_each_structure_is_scored_on_a_slice_inside_its_own_slices() -> None:
    """The left ball (k 10..22) has slices 11, 14, 16, 18, 21; the right one (k 13..19) 14, 16, 18.
    k:18 as the network's slice is inside the left ball's slices, not the right one's: the right
    ball is scored on its own middle slice, k:16 (which, inside both, is the slice held out)."""
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", n) for n in (11, 14, 16, 18, 21)])
    assert choose_held_out(annotation) == SliceRef("k", 16)
    array = sitk.GetArrayFromImage(image)
    candidates = cheap_candidates(array, annotation, image.GetSpacing(), [1, 2], SliceRef("k", 18))
    assert set(candidates.shared[GROWING]) == {1} and set(candidates.own[GROWING]) == {2}
    assert set(candidates.scored(2)) == {GROWING, GROWING_26, INTENSITY, PROPAGATION, INTERPOLATION}
    # A ball between close slices: interpolation is near exact.
    assert candidates.scored(2)[INTERPOLATION] > 0.9
    # 1+1+1 orthogonal slices: no slice lies inside a ball's slices; the left ball is scored on the
    # network's slice all the same (the two others still label it), the right one, on k:16 and j:16
    # only, on neither.
    orthogonal = from_slices(image, labels_on(image, truth), [SliceRef("k", 16), SliceRef("j", 16), SliceRef("i", 12)])
    across = cheap_candidates(array, orthogonal, image.GetSpacing(), [1, 2], SliceRef("i", 12))
    assert set(across.shared[GROWING]) == {1} and not across.own
    # One slice per structure: nothing to score. Bright balls on a dark ground are explained by
    # their intensity (the model's fit on the slice), so the intensity model is taken...
    single = from_slices(image, labels_on(image, truth), [SliceRef("k", 16)])
    alone = cheap_candidates(array, single, image.GetSpacing(), [1, 2], None)
    assert not alone.shared and not alone.own
    assert min(alone.intensity_fit.values()) > INTENSITY_FIT and alone.best(1) == INTENSITY
    assert overlap_metrics(alone.labels[INTENSITY] == 1, truth == 1).dice > 0.9
    # ...but not when the balls look like their surroundings: then 26-neighbour growing.
    flat = sitk.GetImageFromArray(np.random.default_rng(0).normal(50, 8, truth.shape).astype(np.float32))
    flat.CopyInformation(image)
    look_alike = cheap_candidates(sitk.GetArrayFromImage(flat), single, image.GetSpacing(), [1, 2], None)
    assert max(look_alike.intensity_fit.values()) < INTENSITY_FIT and look_alike.best(1) == DEFAULT


def test_fine_tune_takes_a_cheap_candidate_where_an_undertrained_network_loses_on_the_held_out_slice() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    result = fine_tune(image, annotation, INFO, replace(FAST, max_steps=2))
    training = result.card.training
    network = training["network_held_out_class_dice"]
    scores = training["candidate_held_out_dice"]["network_held_out_slice"]
    expected = {}
    for info in INFO:
        others = {name: by_structure[info.name] for name, by_structure in scores.items()}
        best = max(others, key=lambda name: others[name])  # the first listed wins a tie
        expected[info.name] = best if others[best] > network[info.name] else NETWORK
    assert result.choices == expected == training["structure_choices"]
    assert NETWORK not in expected.values()  # two steps of a tiny network beat neither on bright balls
    labels = sitk.GetArrayFromImage(result.labels)
    assert overlap_metrics(labels == 1, truth == 1).dice > 0.85
    first = sitk.GetArrayFromImage(result.first_labels)
    assert overlap_metrics(first == 1, truth == 1).dice > 0.85


def test_dense_output_ignores_the_reference_outside_the_annotated_voxels() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    scrambled = annotation.labels.copy()
    scrambled[~annotation.known] = np.random.default_rng(1).integers(0, 3, (~annotation.known).sum())
    other = SparseAnnotation(scrambled, annotation.known.copy(), annotation.slices)
    first, second = fine_tune(image, annotation, INFO, FAST), fine_tune(image, other, INFO, FAST)
    for a, b in ((first.labels, second.labels), (first.first_labels, second.first_labels),
                 (first.network_labels, second.network_labels)):
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    assert first.choices == second.choices


def test_the_step_budget_not_the_clock_ends_training_so_a_busy_cpu_changes_nothing(monkeypatch) -> None:
    import MedSegExtension.sparse.finetune as finetune

    assert step_budget(1) < step_budget(8) <= 200  # more structures, more steps; bounded
    monkeypatch.setattr(finetune, "step_budget", lambda classes: 6 + classes)  # the same rule, sized for a test
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    settings = replace(FAST, max_steps=None, time_budget=600, patience=100)
    quiet = fine_tune(image, annotation, INFO, settings)
    stop = threading.Event()

    def busy() -> None:  # a CPU-bound competitor in the same process (yielding the GIL now and then)
        while not stop.is_set():
            sum(i * i for i in range(2_000))
            time.sleep(0.0005)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        started = time.perf_counter()
        loaded = fine_tune(image, annotation, INFO, settings)
        assert time.perf_counter() - started > 0
    finally:
        stop.set()
        worker.join()
    assert quiet.card.training["step_budget"] == 8 == quiet.steps == loaded.steps
    assert quiet.stopped_because == loaded.stopped_because
    assert np.array_equal(sitk.GetArrayFromImage(quiet.labels), sitk.GetArrayFromImage(loaded.labels))


def test_interpolation_alone_fills_between_slices_and_says_nothing_beyond_them() -> None:
    from MedSegExtension.sparse.interpolation import interpolated_labels

    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), [SliceRef("k", 12), SliceRef("k", 20)])
    labels = interpolated_labels(annotation, [1, 2], image.GetSpacing())
    inside = slice(12, 21)
    assert overlap_metrics(labels[inside] == 1, truth[inside] == 1).dice > 0.85
    assert not labels[:12].any() and not labels[21:].any()
