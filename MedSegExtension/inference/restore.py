"""Network probabilities back onto the input grid, slab by slab, so memory grows with voxels, not voxels × classes.

Restoring all C class probabilities to a 512×512×300 CT in float32 takes C × 300 MB (3.5 GB for
11 classes) before any label is known. Here the output grid is cut into slabs along its last
array axis (k); each slab gets the probabilities resampled onto it (linear, in physical space:
this undoes reorientation and respacing in one step, as
``preprocessing.restore_probabilities`` does for the whole grid), and its labels,
uncertainty and (when asked) probabilities are written into the outputs before the next
slab. Only the labels (1–2 bytes a voxel), the uncertainty (4 bytes) and the asked-for
probabilities (4·C bytes) are ever full size.

Same result as the whole-grid restore: the source is the crop plus a one-voxel rim of
background inside the model grid, which is all that linear interpolation reads near the crop;
farther out the old restore saw pure background, and here "no source" is called background.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..io.volumes import same_geometry
from ..preprocessing import PreparedCase

SLAB_BYTES = 64 * 2**20  # float32 probabilities of one slab


@dataclass
class RestoredArrays:
    labels: np.ndarray  # (k, j, i) label values on the input grid
    uncertainty: np.ndarray | None  # (k, j, i) float32 normalized entropy
    probabilities: np.ndarray | None  # (k, j, i, C) float32


def entropy_map(probabilities: np.ndarray, axis: int = 0) -> np.ndarray:
    """Per-voxel entropy of the class distribution, divided by log(C) so it lies in [0, 1]."""
    p = np.clip(probabilities, 1e-8, 1.0)
    return (-(p * np.log(p)).sum(axis=axis) / np.log(p.shape[axis])).astype(np.float32)


def _source(probabilities: np.ndarray, case: PreparedCase) -> sitk.Image:
    """The cropped probabilities with a one-voxel background rim (inside the model grid), as a vector image."""
    full_shape = sitk.GetArrayViewFromImage(case.model_grid).shape
    grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(case.crop, full_shape, strict=True))
    shape = tuple(g.stop - g.start for g in grown)
    source = np.zeros((*shape, probabilities.shape[0]), dtype=np.float32)
    source[..., 0] = 1.0
    inner = tuple(slice(s.start - g.start, s.stop - g.start) for s, g in zip(case.crop, grown, strict=True))
    source[inner] = np.moveaxis(probabilities, 0, -1)
    image = sitk.GetImageFromArray(source, isVector=True)
    image.SetSpacing(case.model_grid.GetSpacing())
    image.SetDirection(case.model_grid.GetDirection())
    image.SetOrigin(case.model_grid.TransformIndexToPhysicalPoint([g.start for g in reversed(grown)]))
    return image


def _slab_reference(original: sitk.Image, start: int, stop: int) -> sitk.Image:
    size = list(original.GetSize())
    reference = sitk.Image([size[0], size[1], stop - start], sitk.sitkUInt8)
    reference.SetSpacing(original.GetSpacing())
    reference.SetDirection(original.GetDirection())
    reference.SetOrigin(original.TransformIndexToPhysicalPoint([0, 0, start]))
    return reference


def restore_streaming(
    probabilities: np.ndarray,
    case: PreparedCase,
    to_labels: Callable[[np.ndarray], np.ndarray],
    *,
    uncertainty: bool = False,
    keep_probabilities: bool = False,
    slab_bytes: int = SLAB_BYTES,
) -> RestoredArrays:
    """Labels (and uncertainty, probabilities) on ``case.original``'s grid from cropped model-grid probabilities.

    ``to_labels`` maps a (C, ...) probability block to label values (argmax + the card's values).
    """
    classes = probabilities.shape[0]
    shape = sitk.GetArrayViewFromImage(case.original).shape  # (k, j, i)
    labels: np.ndarray | None = None
    entropy = np.zeros(shape, np.float32) if uncertainty else None
    kept = np.zeros((*shape, classes), np.float32) if keep_probabilities else None
    if same_geometry(case.model_grid, case.original, tolerance=1e-6):
        block = probabilities
        labels = np.zeros(shape, dtype=to_labels(block[:, :1, :1, :1]).dtype)
        labels[case.crop] = to_labels(block)
        if entropy is not None:
            entropy[case.crop] = entropy_map(block)
        if kept is not None:
            kept[..., 0] = 1.0
            kept[case.crop] = np.moveaxis(block, 0, -1)
        return RestoredArrays(labels, entropy, kept)
    source = _source(probabilities, case)
    slab = max(1, int(slab_bytes // max(1, shape[1] * shape[2] * classes * 4)))
    for start in range(0, shape[0], slab):
        stop = min(start + slab, shape[0])
        resampled = sitk.Resample(source, _slab_reference(case.original, start, stop), sitk.Transform(),
                                  sitk.sitkLinear, 0.0, source.GetPixelID())
        block = np.moveaxis(sitk.GetArrayFromImage(resampled), -1, 0)  # (C, slab, j, i)
        del resampled
        outside = block.sum(axis=0) <= 1e-6  # beyond the source: background
        block[0][outside] = 1.0
        values = to_labels(block)
        if labels is None:
            labels = np.zeros(shape, dtype=values.dtype)
        labels[start:stop] = values
        if entropy is not None:
            entropy[start:stop] = entropy_map(block)
        if kept is not None:
            kept[start:stop] = np.moveaxis(block, 0, -1)
    assert labels is not None
    return RestoredArrays(labels, entropy, kept)
