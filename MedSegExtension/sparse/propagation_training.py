"""Training data and steps for the propagation network: synthetic shapes, synthetic images, simulated slices.

Label maps are drawn from nothing (no atlas, so no real structure is ever seen in training):
space is split into parcels by the argmax of a few smooth random fields (irregular, gyrus- or
lobe-like pieces sharing borders), then a few deformed ellipsoids ("nuclei") and a thin bent tube
("tract") are laid on top. Images come from :class:`LabelToImageSynthesizer` (SynthSeg-style
random contrasts, bias field, partial volume, noise), so a structure sometimes has an intensity
edge to its neighbours and sometimes none. One structure is picked, and an annotator is simulated
as in ``benchmarks/sparse/protocols.py``: 1 to 5 parallel slices spread over the structure's
extent on a random axis, or 1 + 1 + 1 orthogonal slices through its centre.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import ndimage

from ..training.losses import build_loss
from ..training.synthesis import LabelToImageSynthesizer
from .propagation import network_input

MIN_STRUCTURE_VOXELS = 150
POOL = 6  # synthetic scans kept for drawing samples (a new scan costs more than a sample)
SYNTHESIS = {"spacing": [1.0, 1.0, 1.0], "preset_probability": 0.0, "random_background_probability": 0.5}


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, cells: int) -> np.ndarray:
    coarse = rng.standard_normal((cells, cells, cells)).astype(np.float32)
    return ndimage.zoom(coarse, [s / cells for s in shape], order=1, mode="nearest", grid_mode=True)[
        : shape[0], : shape[1], : shape[2]]


def _grid(shape: tuple[int, ...]) -> list[np.ndarray]:
    return [g.astype(np.float32) for g in np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")]


def random_label_map(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """(k, j, i) int16 labels 0..n: parcels, blobs and a tube; see the module docstring."""
    parcels = int(rng.integers(3, 10))
    cells = int(rng.integers(3, 6))
    fields = np.stack([_smooth_field(shape, rng, cells) + rng.normal(0, 0.5) for _ in range(parcels)])
    labels = np.argmax(fields, axis=0).astype(np.int16)
    grid = _grid(shape)
    wobble = _smooth_field(shape, rng, 4)
    next_value = parcels
    for _ in range(int(rng.integers(1, 4))):  # deformed ellipsoids
        centre = rng.uniform(0.2, 0.8, 3) * np.array(shape)
        radii = rng.uniform(3, 0.3 * min(shape), 3)
        rotation = np.linalg.qr(rng.standard_normal((3, 3)))[0]
        offsets = np.stack([g - c for g, c in zip(grid, centre)], axis=-1) @ rotation
        inside = ((offsets / radii) ** 2).sum(axis=-1) + 0.3 * wobble < 1.0
        labels[inside] = next_value
        next_value += 1
    if rng.random() < 0.5:  # a thin bent tube along a random axis
        axis = int(rng.integers(3))
        others = [a for a in range(3) if a != axis]
        t = grid[axis] / shape[axis]
        path = [rng.uniform(0.3, 0.7) * shape[a] + rng.uniform(-0.2, 0.2) * shape[a] * np.sin(
            np.pi * (t * rng.uniform(0.5, 2) + rng.uniform(0, 1))) for a in others]
        radius = rng.uniform(1.5, 4.0)
        inside = sum((grid[a] - p) ** 2 for a, p in zip(others, path)) < radius ** 2
        labels[inside] = next_value
    return labels


def simulated_slices(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(k, j, i) bool known mask: full slices an annotator would draw through ``mask``."""
    known = np.zeros(mask.shape, dtype=bool)
    orthogonal = rng.random() < 0.3
    axes = [0, 1, 2] if orthogonal else [int(rng.integers(3))]
    count = 1 if orthogonal else int(rng.integers(1, 6))
    for axis in axes:
        occupied = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        low, high = int(occupied[0]), int(occupied[-1])
        for m in range(count):
            target = low + (high - low) * (m + 1) / (count + 1) + rng.normal(0, 0.05 * (high - low + 1))
            index = int(occupied[np.argmin(np.abs(occupied - target))])
            plane = [slice(None)] * 3
            plane[axis] = index
            known[tuple(plane)] = True
    return known


def synthetic_scan(shape: tuple[int, int, int], rng: np.random.Generator,
                   synthesizer: LabelToImageSynthesizer) -> tuple[np.ndarray, np.ndarray]:
    """A random (k, j, i) label map with at least one structure large enough, and its synthetic image."""
    while True:
        labels = random_label_map(shape, rng)
        values, counts = np.unique(labels, return_counts=True)
        if (counts >= MIN_STRUCTURE_VOXELS).any():
            return labels, synthesizer(labels, rng)


def sample_from(labels: np.ndarray, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (3, k, j, i) input and its (k, j, i) 0/1 target: a random structure of the scan, simulated slices,
    axes permuted and mirrored at random (the scan is reused for several samples)."""
    values, counts = np.unique(labels, return_counts=True)
    mask = labels == rng.choice(values[counts >= MIN_STRUCTURE_VOXELS])
    order = tuple(int(a) for a in rng.permutation(3))
    flips = tuple(a for a in range(3) if rng.random() < 0.5)
    mask = np.flip(mask.transpose(order), flips)
    image = np.flip(image.transpose(order), flips)
    known = simulated_slices(mask, rng)
    return network_input(np.ascontiguousarray(image), known, mask), mask.astype(np.int64)


def training_sample(shape: tuple[int, int, int], rng: np.random.Generator,
                    synthesizer: LabelToImageSynthesizer) -> tuple[np.ndarray, np.ndarray]:
    """One (3, k, j, i) input and its (k, j, i) 0/1 target from a fresh scan."""
    return sample_from(*synthetic_scan(shape, rng, synthesizer), rng)


def train_steps(network: torch.nn.Module, steps: int, *, shape: tuple[int, int, int] = (64, 64, 64),
                batch_size: int = 2, learning_rate: float = 1e-3, seed: int = 0, time_limit: float | None = None,
                sample: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]] | None = None,
                report: Callable[[int, float], None] | None = None) -> int:
    """Train ``network`` with Dice + CE for ``steps`` (or until ``time_limit`` s); the steps done."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    synthesizer = LabelToImageSynthesizer(SYNTHESIS, seed=seed)
    pool: list[tuple[np.ndarray, np.ndarray]] = []

    def from_pool(r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return sample_from(*pool[int(r.integers(len(pool)))], r)

    draw = sample or from_pool
    loss_fn = build_loss("dice_ce")
    optimizer = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-5)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=max(steps, 2),
                                                   pct_start=0.05)
    network.train()
    start = time.perf_counter()
    done = 0
    for step in range(steps):
        if time_limit is not None and time.perf_counter() - start > time_limit:
            break
        if sample is None:  # one fresh scan a step; samples come from the last POOL scans
            pool.append(synthetic_scan(shape, rng, synthesizer))
            del pool[:-POOL]
        pairs = [draw(rng) for _ in range(batch_size)]
        inputs = torch.from_numpy(np.stack([p[0] for p in pairs]))
        target = torch.from_numpy(np.stack([p[1] for p in pairs]))
        loss = loss_fn(network(inputs), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        done = step + 1
        if report is not None:
            report(done, float(loss.detach()))
    network.eval()
    return done
