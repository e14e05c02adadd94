"""Spatial steps: reorientation, resampling to a target spacing, cropping to the foreground."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}


def reorient(image: sitk.Image, code: str) -> sitk.Image:
    """Permute and flip axes (no interpolation) so the image is in the ``code`` orientation."""
    current = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return image if current == code else sitk.DICOMOrient(image, code)


def spacing_grid(image: sitk.Image, spacing: tuple[float, float, float]) -> sitk.Image:
    """An empty image on the grid with ``spacing`` that covers the same physical extent as ``image``."""
    old_spacing = np.array(image.GetSpacing())
    new_spacing = np.array(spacing, dtype=float)
    old_size = np.array(image.GetSize())
    new_size = np.maximum(1, np.round(old_size * old_spacing / new_spacing)).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    # Keep the extent's centre: the first voxel centre moves by half the difference of the voxel sizes.
    extent = old_size * old_spacing
    shift = (extent - new_size * new_spacing) / 2 + (new_spacing - old_spacing) / 2
    origin = np.array(image.GetOrigin()) + direction @ shift
    grid = sitk.Image([int(s) for s in new_size], sitk.sitkUInt8)
    grid.SetSpacing(tuple(new_spacing))
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(tuple(origin))
    return grid


def resample_onto(image: sitk.Image, reference: sitk.Image, interpolator: str = "linear", default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid in physical space (identity transform)."""
    return sitk.Resample(image, reference, sitk.Transform(), _INTERPOLATORS[interpolator], default, image.GetPixelID())


def needs_resampling(image: sitk.Image, spacing: tuple[float, float, float], tolerance: float = 0.01) -> bool:
    return not np.allclose(image.GetSpacing(), spacing, rtol=tolerance)


def resample_to_spacing(image: sitk.Image, spacing: tuple[float, float, float], interpolator: str = "linear") -> sitk.Image:
    """``image`` on a grid of the given spacing (unchanged when the spacing already matches)."""
    if not needs_resampling(image, spacing):
        return image
    return resample_onto(image, spacing_grid(image, spacing), interpolator, float(_minimum(image)))


def _minimum(image: sitk.Image) -> float:
    return float(sitk.GetArrayViewFromImage(image).min()) if image.GetNumberOfComponentsPerPixel() == 1 else 0.0


def crop_box(mask: np.ndarray, margin: int = 8, minimum_size: tuple[int, int, int] | None = None) -> tuple[slice, ...]:
    """Slices (k, j, i) of the bounding box of ``mask`` plus ``margin``, grown to ``minimum_size``."""
    shape = mask.shape
    if not mask.any():
        return tuple(slice(0, n) for n in shape)
    boxes = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        start, stop = max(0, present[0] - margin), min(shape[axis], present[-1] + 1 + margin)
        if minimum_size is not None and stop - start < minimum_size[axis]:
            missing = min(minimum_size[axis], shape[axis]) - (stop - start)
            start = max(0, start - missing // 2)
            stop = min(shape[axis], start + (stop - start) + missing)
            start = max(0, stop - min(minimum_size[axis], shape[axis]))
        boxes.append(slice(int(start), int(stop)))
    return tuple(boxes)
