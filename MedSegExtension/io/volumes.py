"""Reading and writing 3D volumes with SimpleITK, keeping origin, spacing and direction exactly.

Supported: NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage (.mha, .mhd) and DICOM
series folders (the largest series unless a SeriesInstanceUID is given).
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .atomic import atomic_output, compound_suffix

VOLUME_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".seg.nrrd")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha")
# Past this ratio of largest to smallest voxel size, a volume is a stack of 2D images: a 3D
# network resampled to isotropic voxels would invent most of what it segments.
MAX_ANISOTROPY = 20.0


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` (recursively), largest first."""
    folder = str(folder)
    found: dict[str, tuple[str, ...]] = {}
    for root, _dirs, _files in os.walk(folder):
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) or ():
            files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid)
            if len(files) > len(found.get(uid, ())):
                found[uid] = tuple(files)
    return sorted((DicomSeries(uid, files) for uid, files in found.items()), key=lambda s: -len(s.files))


def _read_dicom(folder: Path, series_uid: str | None) -> sitk.Image:
    series = list_dicom_series(folder)
    if not series:
        raise InputError(f"{folder}: folder contains no DICOM series")
    if series_uid is not None:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            known = ", ".join(s.uid for s in series)
            raise InputError(f"{folder}: no DICOM series with UID {series_uid} (found: {known})")
        chosen = matches[0]
    else:
        chosen = series[0]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        return reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"{folder}: cannot read DICOM series {chosen.uid} ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # SimpleITK puts the useful sentence after the source location lines.
    useful = [line for line in lines if not line.startswith(("/", "sitk::", "itk::"))]
    return (useful or lines or [type(exc).__name__])[-1][:200]


def _nifti_data_end(header: bytes) -> int | None:
    """Byte offset where a single-file NIfTI's voxel data starts, or None if not NIfTI-1/2."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            return int(struct.unpack(order + "f", header[108:112])[0])
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            return int(struct.unpack(order + "q", header[168:176])[0])
    return None


def _check_nifti_complete(path: Path) -> None:
    """ITK's NIfTI reader zero-fills a truncated file without a word; check the byte count first."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    pixel_bytes = np.dtype(sitk.GetArrayViewFromImage(sitk.Image(1, 1, reader.GetPixelID())).dtype).itemsize
    expected = int(np.prod(reader.GetSize())) * pixel_bytes * reader.GetNumberOfComponents()
    try:
        if name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                header = stream.read(544)
                available = len(header) + sum(len(block) for block in iter(lambda: stream.read(1 << 22), b""))
        else:
            with open(path, "rb") as stream:
                header = stream.read(544)
            available = path.stat().st_size
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: file is truncated or corrupt ({exc})") from None
    offset = _nifti_data_end(header)
    if offset is not None and available < offset + expected:
        raise InputError(f"{path}: file is truncated ({available - offset} of {expected} bytes of voxel data)")


def read_image(path: str | os.PathLike[str], series_uid: str | None = None) -> sitk.Image:
    """Read a volume file or a DICOM folder; raise :class:`InputError` naming the file on failure."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_dicom(path, series_uid)
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty")
        _check_nifti_complete(path)
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read image ({_first_line(exc)})") from None
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


def write_image(image: sitk.Image, path: str | os.PathLike[str], *, compress: bool = True) -> Path:
    """Write atomically; the file appears only when complete."""
    path = Path(path)
    suffix = compound_suffix(path)
    if suffix not in WRITE_SUFFIXES and suffix != ".seg.nrrd":
        raise InputError(f"{path}: unsupported output format {suffix!r} (use one of {', '.join(WRITE_SUFFIXES)})")
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
