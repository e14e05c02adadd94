"""Training patches from a sparse annotation: where to cut them, and how to vary them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> np.ndarray:
    pads = [(0, max(0, s - n)) for n, s in zip(array.shape[-3:], shape)]
    if not any(p[1] for p in pads):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + pads, constant_values=value)


class PatchSampler:
    """Patches centred near known voxels; a ``foreground_fraction`` of them on a labelled structure."""

    def __init__(self, image: np.ndarray, target: np.ndarray, weight: np.ndarray, patch: Sequence[int],
                 foreground_fraction: float, rng: np.random.Generator, focus: np.ndarray | None = None) -> None:
        self.patch = np.array(patch)
        self.image = pad_to(image, patch, float(image.min()))
        self.target = pad_to(target, patch, 0)
        self.weight = pad_to(weight, patch, 0.0)
        self.known = np.argwhere(self.weight > 0)
        if focus is not None:  # known voxels near the structures: the negatives that teach the borders
            near = np.argwhere((self.weight > 0) & pad_to(focus, patch, False))
            if len(near):
                self.known = near
        self.foreground = np.argwhere((self.weight > 0) & (self.target > 0))
        self.fraction, self.rng = foreground_fraction, rng

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pool = self.foreground if len(self.foreground) and self.rng.random() < self.fraction else self.known
        centre = pool[self.rng.integers(len(pool))]
        # The known voxel may fall anywhere in the patch: the network must not learn that labels
        # sit at the patch centre, since at inference every plane of a window is predicted.
        jitter = self.rng.integers(-(self.patch // 2) + 1, self.patch // 2)
        shape = np.array(self.target.shape)
        start = np.clip(centre - self.patch // 2 + jitter, 0, shape - self.patch)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, self.patch))
        return self.image[(slice(None), *box)], self.target[box], self.weight[box]


def augment(image: np.ndarray, target: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
    """Intensity jitter (contrast, brightness, gamma, noise) and mirror flips across the two
    non-left-right axes. With a handful of slices a network can memorise noise patterns;
    these keep it learning appearance instead."""
    image = np.clip(image, 0.0, None) ** rng.uniform(0.7, 1.4)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-0.1, 0.1)
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), image.shape)
    for axis in (0, 1):  # k and j; i is left-right, handled by flip_left_right with class swapping
        if rng.random() < 0.5:
            image, target, weight = np.flip(image, axis + 1), np.flip(target, axis), np.flip(weight, axis)
    return image.astype(np.float32), np.ascontiguousarray(target), np.ascontiguousarray(weight)
