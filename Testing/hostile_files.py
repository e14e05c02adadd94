"""A corpus of crafted hostile or careless input files, each written into a folder the test gives.

Every maker returns the path it wrote. The files are real (their bytes are what a broken
scanner, a careless script or an attacker would produce); nothing here is a mock.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk


def nrrd_claiming(folder: Path, sizes: tuple[int, int, int], *, pixel: str = "float", encoding: str = "raw",
                  name: str = "claims.nrrd") -> Path:
    """An NRRD whose header claims ``sizes`` voxels over 1 KB of data."""
    path = folder / name
    header = f"NRRD0004\ntype: {pixel}\ndimension: 3\nsizes: {' '.join(map(str, sizes))}\nencoding: {encoding}\nendian: little\n\n"
    path.write_bytes(header.encode() + b"\0" * 1024)
    return path


def mha_claiming(folder: Path, sizes: tuple[int, int, int], name: str = "claims.mha") -> Path:
    path = folder / name
    header = f"ObjectType = Image\nNDims = 3\nDimSize = {' '.join(map(str, sizes))}\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n"
    path.write_bytes(header.encode() + b"\0" * 1024)
    return path


def volume(size=(12, 12, 12), seed: int = 0) -> sitk.Image:
    rng = np.random.default_rng(seed)
    return sitk.GetImageFromArray(rng.normal(100, 20, size[::-1]).astype(np.float32))


def truncated_mha(folder: Path) -> Path:
    complete = folder / "complete.mha"
    sitk.WriteImage(volume(), str(complete), False)
    path = folder / "truncated.mha"
    data = complete.read_bytes()
    path.write_bytes(data[: len(data) - 500])
    return path


def complex_volume(folder: Path, suffix: str) -> Path:
    rng = np.random.default_rng(1)
    array = (rng.random((10, 10, 10)) + 1j * rng.random((10, 10, 10))).astype(np.complex64)
    path = folder / f"complex{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def sheared_nrrd(folder: Path, shear: float = 0.3) -> Path:
    """A volume whose second axis leans by ``shear`` into the first (as a gantry tilt does)."""
    path = folder / "sheared.nrrd"
    header = ("NRRD0004\ntype: uchar\ndimension: 3\nspace: left-posterior-superior\nsizes: 12 12 12\n"
              f"space directions: (1,0,0) ({shear},1,0) (0,0,1)\nencoding: raw\n\n")
    path.write_bytes(header.encode() + np.random.default_rng(2).integers(0, 200, 12**3, dtype=np.uint8).tobytes())
    return path


def sheared_nifti(folder: Path, shear: float = 0.3) -> Path:
    """A NIfTI-1 whose sform has shear; ITK reads it as square and moves the volume."""
    plain = folder / "plain.nii"
    sitk.WriteImage(volume(), str(plain))
    data = bytearray(plain.read_bytes())
    struct.pack_into("<h", data, 254, 1)  # sform_code: scanner
    struct.pack_into("<12f", data, 280, 1, shear, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0)
    path = folder / "sheared.nii"
    path.write_bytes(bytes(data))
    return path


def nifti_with_non_finite(folder: Path, suffix: str = ".nii.gz") -> Path:
    array = sitk.GetArrayFromImage(volume())
    array[3, 3, 3] = np.nan
    array[5, 5, 5] = np.inf
    path = folder / f"nan{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    return path


def with_spacing(folder: Path, spacing: tuple[float, float, float], name: str = "spacing.nii.gz") -> Path:
    image = volume((24, 24, 24))
    image.SetSpacing(spacing)
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path


def dicom_series(folder: Path, uid: str = "1.2.826.0.1.3680043.2.1125.1", description: str = "axial",
                 slices: int = 8, spacing: float = 2.5, tilt: float = 0.0) -> Path:
    """A CT series of ``slices`` 16×16 files written with SimpleITK, one file per slice; ``tilt``
    moves each slice sideways by that fraction of the slice step (a gantry-tilted acquisition)."""
    folder.mkdir(parents=True, exist_ok=True)
    array = (np.random.default_rng(3).random((slices, 16, 16)) * 1000).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(slices):
        image = sitk.GetImageFromArray(array[index])
        tags = {"0020|000e": uid, "0008|103e": description, "0020|0032": f"0\\{index * spacing * tilt:g}\\{index * spacing:g}",
                "0020|0037": "1\\0\\0\\0\\1\\0", "0020|0013": str(index + 1), "0008|0060": "CT",
                "0008|0018": f"{uid}.{index + 1}"}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{index:03d}.dcm"))
        writer.Execute(image)
    return folder


def dicom_with_missing_slice(folder: Path) -> Path:
    series = dicom_series(folder)
    (series / "004.dcm").unlink()
    return series


def dicom_with_corrupt_slice(folder: Path) -> Path:
    series = dicom_series(folder)
    middle = series / "004.dcm"
    middle.write_bytes(middle.read_bytes()[:600])
    return series


def two_equal_dicom_series(folder: Path) -> Path:
    dicom_series(folder / "a", uid="1.2.826.0.1.3680043.2.1125.7", description="T1 axial")
    dicom_series(folder / "b", uid="1.2.826.0.1.3680043.2.1125.8", description="T1 axial repeat")
    return folder


def transform_file(folder: Path, matrix: np.ndarray, name: str = "transform.txt") -> Path:
    numbers = " ".join(repr(float(v)) for v in [*np.asarray(matrix, dtype=float).ravel(), 0, 0, 0])
    path = folder / name
    path.write_text("#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
                    f"Parameters: {numbers}\nFixedParameters: 0 0 0\n")
    return path


def label_map_with(folder: Path, reference: sitk.Image, value: int, name: str) -> Path:
    """A label map on ``reference``'s grid painted on slice k=4 with 1 and, somewhere, ``value``."""
    array = np.zeros(sitk.GetArrayViewFromImage(reference).shape, dtype=np.int32)
    array[4, 2:8, 2:8] = 1
    array[4, 0, 0] = value
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    path = folder / name
    sitk.WriteImage(image, str(path))
    return path


def copy_of(source: Path, folder: Path) -> Path:
    target = folder / source.name
    shutil.copy(source, target)
    return target
