"""Reading and writing 3D volumes with SimpleITK, keeping origin, spacing and direction exactly.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM
series folders (the largest series unless a SeriesInstanceUID is given).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import atomic_output, compound_suffix
from .dicom import DicomSeries as DicomSeries  # re-exported: callers list series through this module
from .dicom import list_dicom_series as list_dicom_series
from .dicom import read_dicom
from .headers import check_header
from .quiet import first_line, quiet_itk

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
# Past this ratio of largest to smallest voxel size, a volume is a stack of 2D images: a 3D
# network resampled to isotropic voxels would invent most of what it segments.
MAX_ANISOTROPY = 20.0
# Voxel sizes outside this range (mm) are header errors (metres, or 1e-30), not anatomy.
SPACING_RANGE = (1e-3, 100.0)


def _read_file(path: Path) -> sitk.Image:
    """Header first (sizes, shear, completeness, NaN), then the voxels."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    with quiet_itk():
        reader.ReadImageInformation()
    check_header(path, reader)
    with quiet_itk():
        return reader.Execute()


def read_image(path: str | os.PathLike[str], series_uid: str | None = None) -> sitk.Image:
    """Read a volume file or a DICOM folder; raise :class:`InputError` naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return read_dicom(path, series_uid)
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty")
        return _read_file(path)
    except RuntimeError as exc:
        reason = first_line(exc)
        if "no such file" in reason.lower() and path.is_file():
            reason = "file is truncated or its data file is missing"  # ITK's words for a short MetaImage
        raise InputError(f"{path}: cannot read image ({reason})") from None
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None


def read_volume(
    path: str | os.PathLike[str], series_uid: str | None = None, *, allow_vector: bool = False
) -> sitk.Image:
    """Read a 3D scalar volume and check it: 3D, finite, not constant."""
    image = read_image(path, series_uid)
    check_volume(image, str(path), allow_vector=allow_vector)
    return image


def check_volume(image: sitk.Image, source: str, *, allow_vector: bool = False, allow_constant: bool = False) -> None:
    """Raise :class:`InputError` unless ``image`` is a usable 3D volume."""
    dimension = image.GetDimension()
    if dimension == 4 and image.GetSize()[3] == 1:
        dimension = 3  # a 4D file with one time point is a 3D volume in disguise; callers squeeze it
    if dimension != 3:
        raise InputError(f"{source}: expected a 3D volume, got {image.GetDimension()}D of size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1 and not allow_vector:
        raise InputError(f"{source}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} components")
    if min(image.GetSize()[:3]) < 2:
        raise InputError(f"{source}: volume of size {image.GetSize()} is a single slice, not a 3D volume")
    spacing = image.GetSpacing()[:3]
    if min(spacing) <= 0:
        raise InputError(f"{source}: non-positive voxel spacing {spacing}")
    if min(spacing) < SPACING_RANGE[0] or max(spacing) > SPACING_RANGE[1]:
        raise InputError(
            f"{source}: implausible voxel spacing {tuple(float(f'{s:.3g}') for s in spacing)} mm "
            f"(accepted: {SPACING_RANGE[0]:g} to {SPACING_RANGE[1]:g} mm); fix the header's units"
        )
    if max(spacing) / min(spacing) > MAX_ANISOTROPY:
        raise InputError(
            f"{source}: extreme anisotropy: voxel spacing {tuple(round(s, 3) for s in spacing)} mm has a ratio of "
            f"{max(spacing) / min(spacing):.0f} (limit {MAX_ANISOTROPY}); resample it or use thinner slices"
        )
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(np.size(array) - np.isfinite(array).sum())
        raise InputError(f"{source}: {bad} voxels are NaN or infinite")
    if not allow_constant and array.size and array.min() == array.max():
        raise InputError(f"{source}: every voxel has the value {array.flat[0]}; nothing to segment")


def squeeze_to_3d(image: sitk.Image) -> sitk.Image:
    """Drop a singleton fourth axis (some tools write 3D volumes as 4D with one time point)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return image[:, :, :, 0]
    return image


def check_image_output(path: str | os.PathLike[str] | None, option: str) -> None:
    """Refuse, before any work, an image output (probabilities, uncertainty) in a format it cannot have.

    ``.seg.nrrd`` is refused: Slicer reads that name as a segmentation (integer segments with
    names), and float probabilities in it are an invalid segmentation; ``.nrrd`` holds them.
    """
    if path is None:
        return
    suffix = compound_suffix(Path(path))
    if suffix == ".seg.nrrd":
        raise InputError(f"{option} {path}: .seg.nrrd is for segmentations; write this float map as .nrrd or .nii.gz")
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"{option} {path}: unsupported format {suffix or 'without extension'!r} "
                         f"(use one of {', '.join(WRITE_SUFFIXES)})")


def write_image(image: sitk.Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write atomically; the file appears only when complete."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in WRITE_SUFFIXES and suffix != ".seg.nrrd":
        raise InputError(f"{path}: unsupported output format {suffix!r} (use one of {', '.join(WRITE_SUFFIXES)})")
    if suffix == ".seg.nrrd" and (image.GetNumberOfComponentsPerPixel() != 1 or "float" in image.GetPixelIDTypeAsString()):
        raise InputError(f"{path}: .seg.nrrd is for segmentations; write this float map as .nrrd or .nii.gz")
    with atomic_output(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def same_geometry(a: sitk.Image, b: sitk.Image, tolerance: float = 1e-4) -> bool:
    """True when both images sit on the same voxel grid (size, origin, spacing, direction)."""
    return (
        a.GetSize()[:3] == b.GetSize()[:3]
        and np.allclose(a.GetOrigin()[:3], b.GetOrigin()[:3], atol=tolerance * max(1.0, max(map(abs, a.GetOrigin()[:3]))))
        and np.allclose(a.GetSpacing()[:3], b.GetSpacing()[:3], rtol=tolerance)
        and np.allclose(np.array(a.GetDirection()).ravel()[:9], np.array(b.GetDirection()).ravel()[:9], atol=tolerance)
    )


def require_same_geometry(image: sitk.Image, labels: sitk.Image, image_name: str, labels_name: str) -> None:
    if not same_geometry(image, labels):
        raise InputError(
            f"{labels_name}: geometry differs from {image_name} "
            f"(size {labels.GetSize()} vs {image.GetSize()}, spacing {tuple(round(s, 4) for s in labels.GetSpacing())} "
            f"vs {tuple(round(s, 4) for s in image.GetSpacing())}, origin or direction)"
        )
