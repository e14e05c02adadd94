"""Resampling into the frame a transform defines (the physician's rotated view) and back.

Seed 003: a physician rotated each CT in ITK-SNAP, labelled it in that rotated view and
saved the rotation as an ITK transform. With ``T`` the file's fixed→moving map (LPS):

* into the frame: ``frame(x) = image(T(x))`` — what ITK-SNAP shows when it reslices the
  moving image through ``T``;
* back: ``labels_original(y) = labels_frame(T⁻¹(y))`` on the original grid, nearest
  neighbour, so label values are never mixed.

ITK-SNAP reslices onto the main image's grid, which cuts off the corners of a rotated
volume; in Python, pass ``reference=`` that grid (or the labels' image) to reproduce it. The
default grid here instead covers the whole rotated volume: the input's spacing and
direction, and the bounding box (along those directions) of the input's corner voxel
centres mapped through ``T⁻¹``. For the identity transform that is the input grid itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..limits import check_image_memory, describe_size
from .rotation import affine_from_matrix, affine_matrix

MIN_FRAME_VOXELS = 8  # the smallest window a model card may declare

Interpolator = Literal["linear", "nearest"]
_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


@dataclass(frozen=True)
class Grid:
    """A voxel grid: size (x, y, z), spacing, origin (LPS mm) and row-major direction."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(
            tuple(int(n) for n in image.GetSize()),
            tuple(image.GetSpacing()),
            tuple(image.GetOrigin()),
            tuple(image.GetDirection()),
        )


def _check_3d(image: sitk.Image, what: str) -> None:
    if image.GetDimension() != 3:
        raise InputError(f"{what}: expected a 3D image, got {image.GetDimension()}D")


def inverse_transform(transform: sitk.Transform) -> sitk.Transform:
    """The moving→fixed map; exact for linear transforms (as an AffineTransform)."""
    if transform.IsLinear():
        return affine_from_matrix(np.linalg.inv(affine_matrix(transform)))
    try:
        return transform.GetInverse()
    except RuntimeError:
        raise InputError(f"{transform.GetName()} has no inverse that SimpleITK can compute") from None


def frame_grid(image: sitk.Image, transform: sitk.Transform) -> Grid:
    """The default frame grid: whole rotated volume, input spacing and direction (see module doc)."""
    _check_3d(image, "image")
    if not transform.IsLinear():
        raise InputError(f"{transform.GetName()} is not linear; --transform takes linear (rigid or affine) transforms only")
    inverse = np.linalg.inv(affine_matrix(transform))
    size = np.array(image.GetSize(), dtype=float)
    spacing = np.array(image.GetSpacing(), dtype=float)
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.array(image.GetOrigin(), dtype=float)
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)], dtype=float) * (size - 1)
    points = origin + (corners * spacing) @ direction.T  # index -> LPS
    mapped = points @ inverse[:3, :3].T + inverse[:3, 3]
    along = mapped @ direction  # coordinates along the grid axes
    low, high = along.min(axis=0), along.max(axis=0)
    extent = high - low
    counts = np.array([math.ceil(e / s - 1e-6) + 1 for e, s in zip(extent, spacing, strict=True)])
    low -= ((counts - 1) * spacing - extent) / 2  # centre the slack
    return Grid(
        tuple(int(n) for n in counts),
        tuple(float(s) for s in spacing),
        tuple(float(v) for v in direction @ low),
        tuple(float(v) for v in direction.ravel()),
    )


def check_frame_grid(grid: Grid, image: sitk.Image, source: str = "--transform") -> None:
    """Refuse a frame grid that would not fit in memory, or that collapses to a few voxels."""
    bytes_per_component = sitk.GetArrayViewFromImage(sitk.Image(1, 1, image.GetPixelID())).itemsize
    check_image_memory(grid.size, bytes_per_component, image.GetNumberOfComponentsPerPixel(), source)
    if min(grid.size) < MIN_FRAME_VOXELS:
        raise InputError(f"{source}: the volume in the transform's frame is only {describe_size(grid.size)} voxels "
                         f"(minimum {MIN_FRAME_VOXELS} per axis); the transform is degenerate")


def _resample(
    image: sitk.Image, grid: Grid, transform: sitk.Transform, interpolator: Interpolator, default: float
) -> sitk.Image:
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {', '.join(_INTERPOLATORS)}, not {interpolator!r}")
    return sitk.Resample(
        image,
        grid.size,
        transform,
        _INTERPOLATORS[interpolator],
        grid.origin,
        grid.spacing,
        grid.direction,
        float(default),
        image.GetPixelID(),
    )


def resample_into_frame(
    image: sitk.Image,
    transform: sitk.Transform,
    *,
    interpolator: Interpolator = "linear",
    reference: sitk.Image | Grid | None = None,
    default_value: float | None = None,
) -> sitk.Image:
    """``frame(x) = image(T(x))`` on ``reference`` or on :func:`frame_grid`.

    Voxels outside the image get ``default_value``, by default the image's minimum (air
    for CT, background 0 for labels). The pixel type is kept.
    """
    _check_3d(image, "image")
    if reference is None:
        grid = frame_grid(image, transform)
        check_frame_grid(grid, image)
    elif isinstance(reference, Grid):
        grid = reference
    else:
        _check_3d(reference, "reference")
        grid = Grid.of(reference)
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    return _resample(image, grid, transform, interpolator, default_value)


def resample_back(labels_in_frame: sitk.Image, transform: sitk.Transform, original_image: sitk.Image) -> sitk.Image:
    """Labels drawn in the frame, on ``original_image``'s grid (nearest neighbour, outside = 0)."""
    _check_3d(labels_in_frame, "labels")
    _check_3d(original_image, "original image")
    return _resample(labels_in_frame, Grid.of(original_image), inverse_transform(transform), "nearest", 0)
