"""The propagation network: its folder (card + weights, refused when planted or broken) and its inference.

Real files and real torch throughout: tiny networks (two levels, a few channels) saved and loaded
the way the bundled one is, and one trained for a few dozen steps on spheres.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from MedSegExtension.errors import CancelledError, InputError, ModelError
from MedSegExtension.limits import set_memory_limit
from MedSegExtension.metrics.overlap import overlap_metrics
from MedSegExtension.models.registry import ModelRegistry, sha256_of
from MedSegExtension.progress import CancelToken
from MedSegExtension.sparse.annotations import SliceRef, SparseAnnotation
from MedSegExtension.sparse.propagation import coarsening_factor, network_input, propagate
from MedSegExtension.sparse.propagation_model import (
    PROPAGATION_CARD,
    PROPAGATION_WEIGHTS,
    bundled_propagation_model,
    load_propagation_model,
    new_network,
    propagation_card,
    save_propagation_model,
)
from MedSegExtension.sparse.propagation_training import (
    random_label_map,
    sample_from,
    simulated_slices,
    train_steps,
)

TINY = {"channels": (4, 8), "window": 16}


def tiny_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    card = propagation_card(**TINY)
    save_propagation_model(card, new_network(card), folder)
    return folder


def complete_slices(labels: np.ndarray, slices: list[SliceRef]) -> SparseAnnotation:
    known = np.zeros(labels.shape, dtype=bool)
    for ref in slices:
        index = [slice(None)] * 3
        index[ref.array_axis] = ref.index
        known[tuple(index)] = True
    return SparseAnnotation(labels.copy(), known, tuple(slices))


def sphere(shape: tuple[int, ...], centre, radius: float) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    return sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2


def test_a_saved_model_loads_with_its_card_and_the_same_weights(tmp_path) -> None:
    folder = tiny_model(tmp_path / "model")
    network, card = load_propagation_model(folder)
    assert card.input_channels == 3 and card.num_classes == 2 and card.window_size == (16, 16, 16)
    assert card.sha256 == sha256_of(folder / PROPAGATION_WEIGHTS)
    saved = torch.load(folder / PROPAGATION_WEIGHTS, weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in network.state_dict().items())
    assert not network.training


def test_the_propagation_folder_is_not_listed_as_a_segmentation_model(tmp_path) -> None:
    tiny_model(tmp_path / "sparse-propagation")
    assert ModelRegistry(bundled=tmp_path, user=tmp_path / "user").bundled_models() == []


class Planted:
    """A pickle that would run a command when unpickled without weights_only."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/medseg-propagation-pwned",))


def test_a_planted_pickle_is_refused_in_one_line(tmp_path) -> None:
    folder = tiny_model(tmp_path / "model")
    weights = folder / PROPAGATION_WEIGHTS
    weights.write_bytes(pickle.dumps({"state_dict": Planted()}))
    card = json.loads((folder / PROPAGATION_CARD).read_text())
    (folder / PROPAGATION_CARD).write_text(json.dumps({**card, "sha256": sha256_of(weights)}))
    with pytest.raises(ModelError) as raised:
        load_propagation_model(folder)
    message = str(raised.value)
    assert "refused" in message and str(weights) in message and "\n" not in message
    assert not Path("/tmp/medseg-propagation-pwned").exists()


def test_replaced_weights_and_missing_files_each_give_one_clear_error(tmp_path) -> None:
    folder = tiny_model(tmp_path / "model")
    (folder / PROPAGATION_WEIGHTS).write_bytes(b"not the weights")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        load_propagation_model(folder)
    (folder / PROPAGATION_WEIGHTS).unlink()
    with pytest.raises(ModelError, match=f"{PROPAGATION_WEIGHTS}: weights file .* is missing"):
        load_propagation_model(folder)
    with pytest.raises(ModelError, match=f"nowhere: not a model folder \\(no {PROPAGATION_CARD}\\)"):
        load_propagation_model(tmp_path / "nowhere")


def test_a_segmentation_card_is_not_taken_for_a_propagation_card(tmp_path) -> None:
    folder = tiny_model(tmp_path / "model")
    card = json.loads((folder / PROPAGATION_CARD).read_text())
    (folder / PROPAGATION_CARD).write_text(json.dumps({**card, "input_channels": 1}))
    with pytest.raises(ModelError, match="not a propagation card"):
        load_propagation_model(folder)


def two_structure_case(shape=(20, 22, 26)):
    rng = np.random.default_rng(1)
    truth = np.zeros(shape, dtype=np.uint8)
    truth[sphere(shape, (10, 8, 8), 5)] = 3
    truth[sphere(shape, (10, 14, 18), 5)] = 7
    image = (truth > 0) * 1.0 + rng.normal(0, 0.1, shape)
    return image.astype(np.float32), truth, complete_slices(truth, [SliceRef("k", 8), SliceRef("k", 12)])


def test_random_weights_give_labels_of_the_annotated_values_only_and_keep_the_drawn_voxels(tmp_path) -> None:
    image, _truth, annotation = two_structure_case()
    seen: list[float] = []
    labels = propagate(image, annotation, (1.0, 1.0, 1.0), [3, 7], model=load_propagation_model(tiny_model(tmp_path)),
                       progress=lambda fraction, message: seen.append(fraction))
    assert labels.shape == image.shape
    assert set(np.unique(labels).tolist()) <= {0, 3, 7}
    assert np.array_equal(labels[annotation.known], annotation.labels[annotation.known])
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_a_cancelled_token_stops_propagation(tmp_path) -> None:
    image, _truth, annotation = two_structure_case()
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        propagate(image, annotation, model=load_propagation_model(tiny_model(tmp_path)), cancel=token)


def test_memory_is_checked_before_anything_is_allocated(tmp_path) -> None:
    image, _truth, annotation = two_structure_case()
    set_memory_limit(1e-6)
    try:
        with pytest.raises(InputError, match="propagation"):
            propagate(image, annotation, model=load_propagation_model(tiny_model(tmp_path)))
    finally:
        set_memory_limit(None)


def test_a_large_box_is_propagated_on_a_coarser_grid_with_the_same_shape_with_mirroring(tmp_path, monkeypatch) -> None:
    import MedSegExtension.sparse.propagation as propagation

    image, _truth, annotation = two_structure_case()
    monkeypatch.setattr(propagation, "MAX_VOXELS", 800)
    assert propagation.coarsening_factor((16, 16, 16), 800) == 2 and coarsening_factor((8, 8, 8)) == 1
    labels = propagate(image, annotation, model=load_propagation_model(tiny_model(tmp_path)), mirror=True)
    assert labels.shape == image.shape and set(np.unique(labels).tolist()) <= {0, 3, 7}
    assert np.array_equal(labels[annotation.known], annotation.labels[annotation.known])


def test_synthetic_training_samples_hold_one_structure_and_its_slices() -> None:
    rng = np.random.default_rng(0)
    labels = random_label_map((24, 24, 24), rng)
    assert labels.shape == (24, 24, 24) and len(np.unique(labels)) >= 2
    inputs, target = sample_from(labels, (labels * 0.1).astype(np.float32), rng)
    known, drawn = inputs[1] > 0, inputs[2] > 0
    assert inputs.shape == (3, 24, 24, 24) and inputs[0].min() >= 0.0 and inputs[0].max() <= 1.0
    assert known.any() and drawn.any() and not (drawn & ~known).any()
    assert np.array_equal(drawn, (target == 1) & known)  # the drawn structure is the target, on known voxels
    for _ in range(10):
        slices = simulated_slices(target == 1, rng)
        planes = [int(slices.all(axis=tuple(b for b in range(3) if b != a)).sum()) for a in range(3)]
        parallel = sorted(planes)[:2] == [0, 0] and 1 <= max(planes) <= 5
        assert parallel or planes == [1, 1, 1], planes
        assert (slices & (target == 1)).any()


def sphere_sample(rng: np.random.Generator, shape=(20, 20, 20)) -> tuple[np.ndarray, np.ndarray]:
    """A bright sphere on noise; two parallel annotated slices across it."""
    centre = rng.uniform(8, 12, 3)
    radius = rng.uniform(3.5, 6)
    mask = sphere(shape, centre, radius)
    image = (mask * rng.uniform(0.5, 1.0) + rng.normal(0, 0.15, shape)).astype(np.float32)
    known = np.zeros(shape, dtype=bool)
    for offset in (-0.4, 0.4):
        known[int(round(centre[0] + offset * radius))] = True
    return network_input(image, known, mask), mask.astype(np.int64)


def test_a_network_trained_50_steps_on_spheres_beats_chance_from_two_slices(tmp_path) -> None:
    torch.manual_seed(0)
    card = propagation_card(channels=(4, 8), window=20)
    network = new_network(card)
    train_steps(network, 50, batch_size=2, learning_rate=1e-2, seed=0, sample=sphere_sample)
    rng = np.random.default_rng(123)
    shape = (20, 20, 20)
    truth = sphere(shape, (10, 9, 11), 5)
    image = (truth * 0.8 + rng.normal(0, 0.15, shape)).astype(np.float32)
    annotation = complete_slices(truth.astype(np.uint8), [SliceRef("k", 8), SliceRef("k", 12)])
    labels = propagate(image, annotation, model=(network, card))
    dice = overlap_metrics(labels == 1, truth).dice
    drawn_only = overlap_metrics(annotation.known & truth, truth).dice  # what the slices alone give
    assert dice > 0.75 and dice > drawn_only + 0.3


def test_no_installed_model_is_none_but_a_broken_one_still_raises(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MEDSEG_PROPAGATION_MODEL", str(tmp_path / "absent"))
    assert bundled_propagation_model() is None
    folder = tiny_model(tmp_path / "broken")
    (folder / PROPAGATION_WEIGHTS).unlink()
    monkeypatch.setenv("MEDSEG_PROPAGATION_MODEL", str(folder))
    with pytest.raises(ModelError, match="missing"):
        bundled_propagation_model()


def test_the_bundled_model_loads_verified_and_recovers_a_sphere_from_two_slices() -> None:
    model = bundled_propagation_model()
    assert model is not None and model[1].training["steps"] > 0
    rng = np.random.default_rng(5)
    shape = (32, 36, 40)
    truth = sphere(shape, (16, 17, 21), 8)
    image = (truth * 0.7 + 0.2 + rng.normal(0, 0.05, shape)).astype(np.float32)
    annotation = complete_slices(truth.astype(np.uint8), [SliceRef("k", 13), SliceRef("k", 19)])
    labels = propagate(image, annotation, model=model)
    drawn_only = overlap_metrics(annotation.known & truth, truth).dice
    # 0.76 measured: it extends past the outer slices more than this sphere does (see docs/propagation.md)
    assert overlap_metrics(labels == 1, truth).dice > max(0.7, drawn_only + 0.3)
