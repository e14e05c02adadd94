"""Propagation: a pretrained class-agnostic network turns one structure's annotated slices into its 3D mask.

No fine-tuning: one pass of the network (:mod:`.propagation_model`) per structure, in sliding
windows over that structure's grown box (``priors.class_boxes``), so a first dense answer comes in
seconds. Input channels: the box's image normalised to [0, 1] (percentiles of the box), the known
mask, and the structure's mask on the known voxels (every other annotated structure counts as
background there). A box above :data:`MAX_VOXELS` is handled on a grid coarsened by a whole factor
per axis (block means; a coarse voxel is known when any of its voxels is, and the structure's when
any known one is) and brought back by nearest neighbour.

Structures are combined by highest probability (a voxel is a structure's where that structure's
probability is above one half and the highest); pieces that touch none of the structure's own
annotated voxels are dropped and the annotated voxels keep the user's labels, as elsewhere in
sparse mode (:mod:`.priors`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..inference.sliding_window import WindowSettings, sliding_window_probabilities
from ..limits import check_memory, check_working_grid
from ..models.card import ModelCard
from ..networks import UNet3D
from ..preprocessing.intensity import normalize
from ..progress import CancelToken, ProgressCallback, no_progress
from .annotations import SparseAnnotation
from .priors import class_boxes, keep_annotated_components
from .propagation_model import IMAGE_NORMALIZATION, load_propagation_model

MAX_VOXELS = 2_000_000  # a structure's box above this is propagated on a coarser grid
OVERLAP = 0.25


def coarsening_factor(shape: Sequence[int], max_voxels: int = MAX_VOXELS) -> int:
    factor = 1
    while np.prod([int(np.ceil(s / factor)) for s in shape]) > max_voxels:
        factor += 1
    return factor


def _block_reduce(array: np.ndarray, factor: int, how: str) -> np.ndarray:
    if factor == 1:
        return array
    padded = [int(np.ceil(s / factor)) * factor for s in array.shape]
    full = np.pad(array, [(0, p - s) for p, s in zip(padded, array.shape)], mode="edge")
    shape = [p // factor for p in padded]
    blocks = full.reshape(shape[0], factor, shape[1], factor, shape[2], factor)
    return blocks.mean(axis=(1, 3, 5)) if how == "mean" else blocks.any(axis=(1, 3, 5))


def network_input(image: np.ndarray, known: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """(3, k, j, i) float32: normalised image, known mask, the structure on known voxels."""
    normalised = normalize(image, IMAGE_NORMALIZATION, mask=np.ones(image.shape, dtype=bool))
    return np.stack([normalised, known.astype(np.float32), (structure & known).astype(np.float32)])


def structure_probability(network: UNet3D, card: ModelCard, image: np.ndarray, known: np.ndarray,
                          structure: np.ndarray, device: torch.device, *, mirror: bool = False,
                          progress: ProgressCallback = no_progress, cancel: CancelToken | None = None) -> np.ndarray:
    """The structure's probability (k, j, i) on the grid of ``image`` (a region, already cropped);
    ``mirror`` averages over the three single-axis mirrors too (the network is class-agnostic: no swap)."""
    factor = coarsening_factor(image.shape)
    small = network_input(_block_reduce(image.astype(np.float32), factor, "mean"),
                          _block_reduce(known, factor, "any"), _block_reduce(structure & known, factor, "any"))
    window = tuple(card.window_size[::-1])
    settings = WindowSettings(window, overlap=OVERLAP, size_divisor=network.size_divisor,
                              mirror_axes=((0,), (1,), (2,)) if mirror else ())
    probability = sliding_window_probabilities(network, small, settings, device, progress=progress,
                                               cancel=cancel)[1]
    if factor > 1:
        for axis in range(3):
            probability = np.repeat(probability, factor, axis=axis)
        probability = probability[: image.shape[0], : image.shape[1], : image.shape[2]]
    return probability


def check_propagation_memory(annotation: SparseAnnotation, boxes: dict, card: ModelCard) -> None:
    """Refuse before allocating: the largest box's working grid, and the two full-size result arrays."""
    window = tuple(card.window_size[::-1])
    for box in boxes.values():
        shape = [b.stop - b.start for b in box]
        factor = coarsening_factor(shape)
        check_working_grid([int(np.ceil(s / factor)) for s in shape], card.input_channels, card.num_classes,
                           "propagation", window=window, what="a structure's propagation grid")
    check_memory(annotation.labels.size * 8.0, "the propagation result", "propagation")


def propagate(image: np.ndarray, annotation: SparseAnnotation, spacing_ijk: Sequence[float] | None = None,
              values: Sequence[int] | None = None, *, model: tuple[UNet3D, ModelCard] | None = None,
              device: str | torch.device = "cpu", mirror: bool = False, progress: ProgressCallback = no_progress,
              cancel: CancelToken | None = None) -> np.ndarray:
    """Dense (k, j, i) labels of ``values`` (default: the annotated classes) propagated from ``annotation``.

    ``model``: a loaded ``(network, card)``; default the bundled propagation model. ``mirror``: mirroring
    test-time augmentation (four network passes instead of one). ``spacing_ijk``
    is accepted for the common candidate signature; the network works in voxels.
    """
    del spacing_ijk
    cancel = cancel or CancelToken()
    network, card = model if model is not None else load_propagation_model(device=device)
    device = torch.device(device)
    values = list(annotation.classes if values is None else values)
    boxes = class_boxes(annotation.labels, annotation.known, values)
    check_propagation_memory(annotation, boxes, card)
    best = np.zeros(annotation.labels.shape, dtype=np.float32)
    labels = np.zeros(annotation.labels.shape, dtype=annotation.labels.dtype)
    for number, (value, box) in enumerate(boxes.items()):
        cancel.raise_if_cancelled()

        def report(fraction: float, message: str, number: int = number, value: int = value) -> None:
            progress((number + fraction) / len(boxes), f"propagating structure {value}: {message}")

        probability = structure_probability(network, card, image[box], annotation.known[box],
                                            annotation.labels[box] == value, device, mirror=mirror, progress=report,
                                            cancel=cancel)
        wins = (probability > 0.5) & (probability > best[box])
        best[box] = np.where(wins, probability, best[box])
        labels[box] = np.where(wins, value, labels[box])
    labels = keep_annotated_components(labels, annotation.labels, annotation.known, values)
    labels[annotation.known] = np.where(np.isin(annotation.labels[annotation.known], values),
                                        annotation.labels[annotation.known], 0)
    progress(1.0, "propagation done")
    return labels
