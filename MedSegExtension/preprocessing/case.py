"""One case through the card's preprocessing, and network output back onto the input grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.volumes import same_geometry
from ..limits import check_working_grid, resampled_size
from ..models.card import ModelCard
from .intensity import foreground_mask, normalize
from .spatial import crop_box, reorient, resample_onto, resample_to_spacing

# Smallest working grid per axis: the smallest window a model card may declare.
MIN_WORKING_VOXELS = 8


@dataclass
class PreparedCase:
    image: np.ndarray  # (C, k, j, i) float32: what the network sees
    labels: np.ndarray | None  # (k, j, i) label values on the same grid, when labels were given
    model_grid: sitk.Image  # geometry of the full (uncropped) model-space grid
    crop: tuple[slice, slice, slice]  # the part of model_grid that ``image`` covers
    original: sitk.Image  # the first input channel, whose grid results go back to


def _as_list(images: sitk.Image | Sequence[sitk.Image]) -> list[sitk.Image]:
    return [images] if isinstance(images, sitk.Image) else list(images)


def check_model_grid(image: sitk.Image, card: ModelCard) -> None:
    """Refuse before resampling when the card's spacing (or window) makes a grid too large for memory,
    or its spacing makes one too small to segment."""
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    target_axis = [int(np.argmax(direction[:, axis])) for axis in range(3)]  # LPS axis each voxel axis follows
    order = np.argsort(target_axis)  # voxel axes in the canonical (LPS-sorted) order the card's spacing uses
    size = [image.GetSize()[a] for a in order]
    spacing = [image.GetSpacing()[a] for a in order]
    grid = resampled_size(size, spacing, card.target_spacing)
    check_working_grid(grid, card.input_channels, card.num_classes, f"model {card.name!r}",
                       minimum=(MIN_WORKING_VOXELS,) * 3, window=card.window_size,
                       what=f"the input at the model's {'×'.join(f'{s:g}' for s in card.target_spacing)} mm spacing")


def prepare_case(
    images: sitk.Image | Sequence[sitk.Image],
    card: ModelCard,
    labels: sitk.Image | None = None,
    *,
    crop: bool | None = None,
) -> PreparedCase:
    """Reorient, resample to the card's spacing, crop to the foreground and normalize."""
    channels = _as_list(images)
    if len(channels) != card.input_channels:
        raise InputError(
            f"model {card.name!r} takes {card.input_channels} input volume(s) "
            f"({', '.join(card.channel_names) or 'co-registered channels'}), got {len(channels)}"
        )
    reference = channels[0]
    for index, channel in enumerate(channels[1:], start=2):
        if not same_geometry(reference, channel):
            raise InputError(f"input channel {index} is not on the grid of channel 1; register and resample it first")
    if labels is not None and not same_geometry(reference, labels):
        raise InputError("label map geometry differs from the image")

    check_model_grid(reference, card)
    resampled = [
        resample_to_spacing(reorient(sitk.Cast(channel, sitk.sitkFloat32), card.orientation), card.target_spacing)
        for channel in channels
    ]
    grid = resampled[0]
    arrays = [sitk.GetArrayFromImage(image) for image in resampled]
    label_array = None
    if labels is not None:
        oriented = reorient(labels, card.orientation)
        label_array = sitk.GetArrayFromImage(resample_onto(oriented, grid, "nearest") if oriented.GetSize() != grid.GetSize()
                                             or not np.allclose(oriented.GetSpacing(), grid.GetSpacing()) else oriented)

    mask = foreground_mask(arrays[0])
    use_crop = card.crop_foreground if crop is None else crop
    box = crop_box(mask, margin=8, minimum_size=tuple(card.window_size[::-1])) if use_crop else tuple(
        slice(0, n) for n in arrays[0].shape
    )
    image = np.stack([normalize(array[box], card.normalization, mask[box]) for array in arrays])
    return PreparedCase(
        image=image.astype(np.float32),
        labels=None if label_array is None else label_array[box],
        model_grid=grid,
        crop=box,  # type: ignore[arg-type]
        original=reference,
    )


def restore_probabilities(probabilities: np.ndarray, case: PreparedCase) -> np.ndarray:
    """Network probabilities (C, k, j, i) on the cropped model grid → (C, k, j, i) on the input grid.

    Outside the crop, background has probability 1. Resampling is linear, done in physical
    space, so it undoes reorientation and respacing in one step; when the model grid equals
    the input grid nothing is interpolated.
    """
    classes = probabilities.shape[0]
    full_shape = sitk.GetArrayViewFromImage(case.model_grid).shape
    full = np.zeros((classes, *full_shape), dtype=np.float32)
    full[0] = 1.0
    full[(slice(None), *case.crop)] = probabilities
    if same_geometry(case.model_grid, case.original, tolerance=1e-6):
        return full
    vector = sitk.GetImageFromArray(np.moveaxis(full, 0, -1), isVector=True)
    vector.CopyInformation(case.model_grid)
    restored = sitk.Resample(vector, case.original, sitk.Transform(), sitk.sitkLinear, 0.0, vector.GetPixelID())
    result = np.moveaxis(sitk.GetArrayFromImage(restored), -1, 0)
    # Outside the model grid's extent every channel is 0: call it background.
    outside = result.sum(axis=0) <= 1e-6
    result[0][outside] = 1.0
    return np.ascontiguousarray(result)
