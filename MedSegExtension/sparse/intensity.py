"""An intensity model from the annotated voxels: each voxel takes the class whose intensities it fits best.

What the Threshold effect does by hand, learnt from the user's slices: per class (background
included) a histogram of its annotated voxels' intensities (64 bins over the region's 0.5–99.5 %
range, smoothed by one bin) times the class's share of the annotated voxels; each voxel of the
region takes the most likely class. Each class is then kept inside its grown box and in pieces
that touch its own annotated voxels (``priors``), so look-alike tissue elsewhere is dropped. It
wins where intensity alone defines a structure (bone in CT, tissue classes in MRI) and loses
where neighbours look alike (deep nuclei); the held-out slice tells which (candidates.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .annotations import SparseAnnotation
from .priors import class_boxes, keep_annotated_components, restrict_to_boxes
from .scoring import class_dice_on

BINS = 64


def intensity_labels(image: np.ndarray, annotation: SparseAnnotation, region: tuple[slice, ...],
                     values: Sequence[int]) -> tuple[np.ndarray, dict[int, float]]:
    """Dense (k, j, i) labels from the intensity model on ``region`` (background outside it), and each
    class's Dice on the annotated voxels before they are written back: how well intensity alone
    explains the user's own labels (64 bins per class cannot memorise a slice)."""
    crop = image[region].astype(np.float32)
    labels, known = annotation.labels[region], annotation.known[region]
    low, high = np.percentile(crop, [0.5, 99.5]) if crop.size else (0.0, 1.0)
    width = max(float(high - low), 1e-6) / BINS
    bins = np.clip(((crop - low) / width).astype(np.int64), 0, BINS - 1)
    classes = [0, *values]
    total = max(int(known.sum()), 1)
    likelihood = np.empty((len(classes), BINS), dtype=np.float64)
    for row, value in enumerate(classes):
        seen = bins[known & (labels == value)]
        histogram = ndimage.gaussian_filter1d(np.bincount(seen, minlength=BINS).astype(np.float64), 1.0)
        likelihood[row] = (histogram + 1e-3) / max(histogram.sum(), 1e-9) * (seen.size / total)
    predicted = np.asarray(classes, dtype=annotation.labels.dtype)[np.argmax(likelihood, axis=0)][bins]
    result = np.zeros(annotation.labels.shape, dtype=annotation.labels.dtype)
    result[region] = predicted
    result = restrict_to_boxes(result, class_boxes(annotation.labels, annotation.known, values))
    result = keep_annotated_components(result, annotation.labels, annotation.known, values)
    fit = dict(zip(values, class_dice_on(result, annotation, annotation.known, values)))
    result[annotation.known] = annotation.labels[annotation.known]
    return result, fit
