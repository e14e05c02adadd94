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
from MedSegExtension.sparse.choice import (
    GROWING,
    INTERPOLATION,
    NETWORK,
    choose,
    class_dice_on,
    compose,
    held_out_voxels,
    step_budget,
)
from MedSegExtension.sparse.finetune import fine_tune
from MedSegExtension.sparse.growing import grow_labels

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
    monkeypatch.setattr(growing, "MAX_VOXELS", 5000)  # forces a coarse grid: k 13 and 19 are odd planes
    grown = grow_labels(sitk.GetArrayFromImage(image), annotation, image.GetSpacing())
    assert overlap_metrics(grown == 1, truth == 1).dice > 0.7


def test_choice_goes_to_the_candidate_that_predicts_the_held_out_slice_better() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    where = held_out_voxels(annotation, SliceRef("k", 16))
    assert where[16].all() and not where[14].any()
    good = truth.copy()
    bad = np.roll(truth, 5, axis=2)  # shifted: wrong on the held-out slice
    good_dice, bad_dice = (class_dice_on(c, annotation, where, [1, 2]) for c in (good, bad))
    assert min(good_dice) > 0.99 > max(bad_dice)
    assert choose(bad_dice, {GROWING: good_dice}, [1, 2]) == {1: GROWING, 2: GROWING}
    assert choose(good_dice, {GROWING: bad_dice}, [1, 2]) == {1: NETWORK, 2: NETWORK}
    # A tie stays with the network; the best of several others wins.
    assert choose([0.5, 0.9], {GROWING: [0.8, 0.9], INTERPOLATION: [0.85, 0.2]}, [1, 2]) == \
        {1: INTERPOLATION, 2: NETWORK}
    assert choose(None, {GROWING: good_dice}, [1, 2]) == {1: NETWORK, 2: NETWORK}  # nothing to choose by
    composed = compose(bad, {GROWING: good}, {1: GROWING, 2: NETWORK})
    assert np.array_equal(composed == 1, good == 1)
    assert np.array_equal(composed == 2, (bad == 2) & (good != 1))


def test_fine_tune_takes_region_growing_where_an_undertrained_network_loses_on_the_held_out_slice() -> None:
    image, truth = two_balls()
    annotation = from_slices(image, labels_on(image, truth), SLICES)
    result = fine_tune(image, annotation, INFO, replace(FAST, max_steps=2))
    training = result.card.training
    network, growing = training["network_held_out_class_dice"], training["region_growing_held_out_dice"]
    interpolation = training["interpolation_held_out_class_dice"]
    expected = {}
    for info, n, g, s in zip(INFO, network, growing, interpolation):
        expected[info.name] = NETWORK if max(g, s) <= n else (GROWING if g >= s else INTERPOLATION)
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
