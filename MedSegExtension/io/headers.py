"""Checks of a volume file made from its header, before ITK reads (and allocates) the voxels.

ITK trusts headers: an NRRD or MetaImage claiming 100000³ voxels over 1 KB of data is
allocated before the read fails; a NIfTI sform with shear is silently orthonormalized (the
volume then lands elsewhere); NaN in NIfTI float data is read without a word. So, per file:

* the claimed size is checked against the memory limit (:mod:`..limits`) and, for raw
  (uncompressed) data, against the bytes actually present; compressed data cannot expand
  more than deflate's maximum ratio;
* complex voxels are refused (no model segments them);
* the direction must be orthonormal within :data:`SHEAR_TOLERANCE`;
* NIfTI voxel bytes are counted (ITK zero-fills a short file) and float data is scanned for
  NaN/Inf, in one pass of bounded chunks.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..limits import check_image_memory

# Largest |DᵀD − I| accepted for a direction matrix D (unit columns): 1e-3 is 0.06° off square.
SHEAR_TOLERANCE = 1e-3
DEFLATE_MAX_RATIO = 1032  # deflate cannot expand data more than this
_COMPLEX = (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64)
_NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype code -> numpy type
_CHUNK = 1 << 24


def shear_of(direction: np.ndarray) -> float:
    """How far the unit-column matrix ``direction`` is from orthonormal (max |DᵀD − I|)."""
    columns = direction / np.linalg.norm(direction, axis=0, keepdims=True)
    return float(np.abs(columns.T @ columns - np.eye(columns.shape[1])).max())


def refuse_shear(source: str, shear: float) -> None:
    if shear > SHEAR_TOLERANCE:
        raise InputError(
            f"{source}: the voxel axes are not perpendicular (shear {shear:.3g}, tolerance {SHEAR_TOLERANCE:g}; "
            "gantry-tilted CT is the usual cause); ITK would square them and move the volume, so resample it "
            "onto an orthogonal grid first (Slicer's DICOM 'acquisition geometry regularization')"
        )


def _bytes_per_component(pixel_id: int) -> int:
    return np.dtype(sitk.GetArrayViewFromImage(sitk.Image(1, 1, pixel_id)).dtype).itemsize


def check_header(path: Path, reader: sitk.ImageFileReader) -> None:
    """Check a file whose header ``reader`` has read (ReadImageInformation) before its voxels are read."""
    if reader.GetPixelID() in _COMPLEX:
        raise InputError(f"{path}: complex-valued voxels are not supported (convert to magnitude first)")
    size = reader.GetSize()
    expected = check_image_memory(size, _bytes_per_component(reader.GetPixelID()), reader.GetNumberOfComponents(), str(path))
    name = path.name.lower()
    if name.endswith((".nrrd", ".nhdr")):
        stored = _nrrd_data(path)
    elif name.endswith((".mha", ".mhd")):
        stored = _meta_data(path)
    else:
        stored = None
    if stored is not None:
        available, compressed = stored
        if not compressed and available < expected:
            raise InputError(f"{path}: file is truncated ({available} of {expected} bytes of voxel data)")
        if compressed and available * DEFLATE_MAX_RATIO + 4096 < expected:
            raise InputError(
                f"{path}: header claims {expected} bytes of voxels but only {available} compressed bytes follow; "
                "truncated or implausible"
            )
    if name.endswith((".nii", ".nii.gz")):
        _check_nifti(path, expected)
    elif len(size) >= 3:
        dimension = min(3, len(size))
        direction = np.array(reader.GetDirection(), dtype=float).reshape(len(size), len(size))[:dimension, :dimension]
        refuse_shear(str(path), shear_of(direction))


def _header_fields(text: str, separator: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(separator)
        if sep:
            fields[key.strip().lower()] = value.strip()
    return fields


def _data_file_size(header_path: Path, name: str) -> int | None:
    data = (header_path.parent / name) if not Path(name).is_absolute() else Path(name)
    return data.stat().st_size if data.is_file() else 0


def _nrrd_data(path: Path) -> tuple[int, bool] | None:
    """(bytes of voxel data present, compressed?) for a single-file or detached NRRD."""
    with path.open("rb") as stream:
        head = stream.read(1 << 16)
    end = head.find(b"\n\n")
    if end < 0:
        return None
    fields = _header_fields(head[:end].decode("latin-1"), ":")
    encoding = fields.get("encoding", "raw").lower()
    compressed = encoding not in ("raw",)
    if encoding not in ("raw", "gzip", "gz", "bzip2", "bz2"):
        return None  # text encodings: sizes differ from the voxel bytes
    if "byte skip" in fields or "line skip" in fields:
        return None
    detached = fields.get("data file") or fields.get("datafile")
    if detached:
        if re.search(r"%|\s", detached) or detached.upper() == "LIST":
            return None  # file lists and patterns: left to ITK
        return _data_file_size(path, detached), compressed
    return path.stat().st_size - (end + 2), compressed


def _meta_data(path: Path) -> tuple[int, bool] | None:
    with path.open("rb") as stream:
        head = stream.read(1 << 16)
    match = re.search(rb"^\s*ElementDataFile\s*=\s*(.*?)\r?\n", head, re.MULTILINE | re.IGNORECASE)
    if not match:
        return None
    fields = _header_fields(head[: match.start()].decode("latin-1"), "=")
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if fields.get("headersize", "0") not in ("0", ""):
        return None
    target = match.group(1).decode("latin-1").strip()
    if target.upper() == "LOCAL":
        return path.stat().st_size - match.end(), compressed
    if re.search(r"%|\s", target) or target.upper() == "LIST":
        return None
    return _data_file_size(path, target), compressed


# NIfTI-1 (header of 348 bytes) and NIfTI-2 (540): field -> (byte offset, struct format)
_NIFTI_LAYOUTS = {
    348: {"datatype": (70, "h"), "dims": (40, "8h"), "offset": (108, "f"), "sform_code": (254, "h"), "srow": (280, "12f")},
    540: {"datatype": (12, "h"), "dims": (16, "8q"), "offset": (168, "q"), "sform_code": (348, "i"), "srow": (400, "12d")},
}


def _nifti_fields(header: bytes) -> dict | None:
    """The header fields the checks need, from a NIfTI-1 or NIfTI-2 header (either byte order)."""
    for order in "<>":
        for size, layout in _NIFTI_LAYOUTS.items():
            if len(header) < size or struct.unpack(order + "i", header[:4])[0] != size:
                continue
            values = {name: struct.unpack_from(order + fmt, header, at) for name, (at, fmt) in layout.items()}
            dims = values["dims"]
            return {
                "order": order, "datatype": values["datatype"][0], "dims": dims[1 : 1 + max(0, min(dims[0], 7))],
                "offset": int(values["offset"][0]), "sform_code": values["sform_code"][0],
                "srow": np.array(values["srow"], dtype=float).reshape(3, 4),
            }
    return None


def _open(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else path.open("rb")


def _check_nifti(path: Path, expected: int) -> None:
    """Completeness (ITK zero-fills a short file), shear in the sform (ITK squares it) and NaN/Inf
    in float data (ITK reads them silently): one pass over the voxel bytes."""
    try:
        with _open(path) as stream:
            fields = _nifti_fields(stream.read(544))
            if fields is None:
                return
            if fields["sform_code"] > 0:
                refuse_shear(str(path), shear_of(fields["srow"][:, :3]))
            stream.seek(fields["offset"])
            dtype = _NIFTI_FLOATS.get(fields["datatype"])
            available, bad = _scan(stream, None if dtype is None else np.dtype(fields["order"] + dtype))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: file is truncated or corrupt ({exc})") from None
    if available < expected:
        raise InputError(f"{path}: file is truncated ({available} of {expected} bytes of voxel data)")
    if bad:
        raise InputError(f"{path}: {bad} voxels are NaN or infinite")


def _scan(stream, dtype: np.dtype | None) -> tuple[int, int]:
    """(bytes read, values that are not finite) from the stream's position to its end."""
    available = bad = 0
    tail = b""
    for block in iter(lambda: stream.read(_CHUNK), b""):
        available += len(block)
        if dtype is None:
            continue
        block = tail + block
        usable = len(block) - len(block) % dtype.itemsize
        tail = block[usable:]
        values = np.frombuffer(block[:usable], dtype=dtype)
        bad += int(values.size - np.count_nonzero(np.isfinite(values)))
    return available, bad
