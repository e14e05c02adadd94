"""Intensity normalization: CT windows, MRI percentiles, z-scores."""

from __future__ import annotations

import numpy as np

from ..models.card import Normalization


def foreground_mask(array: np.ndarray) -> np.ndarray:
    """Voxels clearly above the darkest intensities: the body, not the air around it.

    The threshold sits 10 % of the way from the minimum to the 99th percentile, which
    separates air from tissue on MRI (air ≈ 0) and CT (air ≈ −1000 HU) alike.
    """
    low = float(array.min())
    high = float(np.percentile(array, 99))
    if high <= low:
        return np.ones(array.shape, dtype=bool)
    return array > low + 0.1 * (high - low)


def normalize(array: np.ndarray, spec: Normalization, mask: np.ndarray | None = None) -> np.ndarray:
    """Return a float32 copy of ``array`` normalized as ``spec`` says.

    Statistics for ``percentile`` and ``zscore`` come from ``mask`` (default: the foreground),
    so the amount of air around a head does not change the result.
    """
    array = np.asarray(array, dtype=np.float32)
    if spec.kind == "none":
        return array.copy()
    if spec.kind == "window":
        lower, upper = float(spec.lower), float(spec.upper)
        return ((np.clip(array, lower, upper) - lower) / max(upper - lower, 1e-6)).astype(np.float32)
    if mask is None:
        mask = foreground_mask(array)
    values = array[mask] if mask.any() else array.ravel()
    if spec.kind == "percentile":
        lower, upper = np.percentile(values, [spec.lower, spec.upper])
        if upper <= lower:
            upper = lower + 1.0
        return ((np.clip(array, lower, upper) - lower) / (upper - lower)).astype(np.float32)
    if spec.kind == "zscore":
        mean, std = float(values.mean()), float(values.std())
        return ((array - mean) / max(std, 1e-6)).astype(np.float32)
    raise ValueError(f"unknown normalization kind {spec.kind!r}")
