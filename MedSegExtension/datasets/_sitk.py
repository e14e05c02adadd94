"""Small SimpleITK helpers shared by the dataset loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


def read(path: Path) -> sitk.Image:
    """Read an image file; unreadable files become :class:`InputError` naming the file."""
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read image ({str(exc).strip().splitlines()[-1][:160]})") from None


def like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image holding ``array`` (k, j, i) on ``reference``'s grid."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image


def resample_like(image: sitk.Image, reference: sitk.Image, *, nearest: bool, default: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s grid (identity transform, physical space)."""
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, default, image.GetPixelID())
