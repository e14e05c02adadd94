"""DICOM series folders: which series to read, and whether its slices make one regular volume.

ITK's series reader takes the spacing from the first two slices and stacks the rest: a
missing slice stretches the anatomy silently, an unreadable one ends the read with GDCM's
chatter. Policy (what a radiologist expects from a viewer):

* slice positions along the slice normal must be evenly spaced within
  :data:`SPACING_TOLERANCE` of the median step; a gap is refused, naming the series and the
  position where a slice is missing (no interpolation of invented slices);
* a file of the series that cannot be read is refused by name;
* positions that step sideways (gantry tilt) are refused as shear, see :mod:`.headers`;
* two largest series of the same size are not chosen between silently: ``--series`` picks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .headers import refuse_shear
from .quiet import first_line, quiet_itk

SPACING_TOLERANCE = 0.05  # fraction of the median slice step
_POSITION = "0020|0032"
_ORIENTATION = "0020|0037"
_DESCRIPTION = "0008|103e"


@dataclass(frozen=True)
class DicomSeries:
    uid: str
    files: tuple[str, ...]


def list_dicom_series(folder: str | os.PathLike[str]) -> list[DicomSeries]:
    """Every DICOM series in ``folder`` (recursively), largest first."""
    folder = str(folder)
    found: dict[str, tuple[str, ...]] = {}
    with quiet_itk():
        for root, _dirs, _files in os.walk(folder):
            for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) or ():
                files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(root, uid)
                if len(files) > len(found.get(uid, ())):
                    found[uid] = tuple(files)
    return sorted((DicomSeries(uid, files) for uid, files in found.items()), key=lambda s: -len(s.files))


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _header(path: str, uid: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.LoadPrivateTagsOff()
    try:
        with quiet_itk():
            reader.ReadImageInformation()
    except RuntimeError:
        raise InputError(f"{path}: slice of DICOM series {uid} cannot be read (corrupt or truncated)") from None
    return reader


def describe(series: DicomSeries) -> str:
    reader = _header(series.files[0], series.uid)
    description = _tag(reader, _DESCRIPTION) or "no description"
    return f"{series.uid} ({description!r}, {len(series.files)} slices)"


def choose_series(folder: Path, series: list[DicomSeries], series_uid: str | None) -> DicomSeries:
    if not series:
        raise InputError(f"{folder}: folder contains no DICOM series")
    if series_uid is not None:
        matches = [s for s in series if s.uid == series_uid]
        if not matches:
            known = ", ".join(s.uid for s in series)
            raise InputError(f"{folder}: no DICOM series with UID {series_uid} (found: {known})")
        return matches[0]
    tied = [s for s in series if len(s.files) == len(series[0].files)]
    if len(tied) > 1:
        listed = "; ".join(describe(s) for s in tied)
        raise InputError(f"{folder}: {len(tied)} DICOM series of equal size: {listed}; pick one with --series UID")
    return series[0]


def _numbers(text: str, count: int) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in text.split("\\")], dtype=float)
    except ValueError:
        return None
    return values if values.size == count and np.isfinite(values).all() else None


def check_slice_positions(chosen: DicomSeries) -> None:
    """Refuse unreadable files, gaps and sideways steps in a series (see module doc)."""
    positions = []
    normal = None
    for path in chosen.files:
        reader = _header(path, chosen.uid)
        position = _numbers(_tag(reader, _POSITION), 3)
        orientation = _numbers(_tag(reader, _ORIENTATION), 6)
        if position is None or orientation is None:
            return  # no patient geometry (secondary capture): nothing to check against
        if normal is None:
            normal = np.cross(orientation[:3], orientation[3:])
            normal /= np.linalg.norm(normal) or 1.0
        positions.append(position)
    if normal is None or len(positions) < 3:
        return
    points = np.array(positions)
    along = points @ normal
    order = np.argsort(along)
    points, along = points[order], along[order]
    steps = np.diff(along)
    step = float(np.median(steps))
    if step <= 0:
        raise InputError(f"DICOM series {chosen.uid}: several slices share one position; the series is not one volume")
    sideways = np.linalg.norm(np.diff(points, axis=0) - np.outer(steps, normal), axis=1)
    refuse_shear(f"DICOM series {chosen.uid}", float(np.max(sideways / np.maximum(steps, 1e-9))))
    bad = np.flatnonzero(np.abs(steps - step) > SPACING_TOLERANCE * step)
    if not bad.size:
        return
    first = int(bad[0])
    missing = int(round(steps[first] / step)) - 1
    between = f"{steps[first]:.3g} mm between {along[first]:.2f} and {along[first + 1]:.2f} mm along the slice normal"
    if missing < 1:
        problem = "uneven slice spacing"
    else:
        where = ", ".join(f"{along[first] + step * (n + 1):.2f}" for n in range(missing))
        problem = f"{missing} slice{'s' if missing > 1 else ''} missing at {where} mm"
    unreadable = _unreadable_neighbours(chosen)
    if unreadable:
        problem += f"; unreadable file(s) in its folder: {', '.join(unreadable[:3])}"
    raise InputError(
        f"DICOM series {chosen.uid}: slices are {step:.3g} mm apart but {between}: {problem}; "
        "the series is incomplete (refused rather than stretched)"
    )


def _unreadable_neighbours(chosen: DicomSeries) -> list[str]:
    """Files next to the series that GDCM could not place in any series (a corrupt slice drops out so)."""
    folder = Path(chosen.files[0]).parent
    listed = {str(Path(f).resolve()) for s in list_dicom_series(folder) for f in s.files}
    found = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith(".") and path.name.upper() != "DICOMDIR" \
                and str(path.resolve()) not in listed:
            found.append(str(path))
    return found


def read_dicom(folder: Path, series_uid: str | None) -> sitk.Image:
    chosen = choose_series(folder, list_dicom_series(folder), series_uid)
    check_slice_positions(chosen)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    try:
        with quiet_itk():
            return reader.Execute()
    except RuntimeError as exc:
        for path in chosen.files:  # name the file that fails, rather than the series
            single = sitk.ImageFileReader()
            single.SetFileName(path)
            try:
                with quiet_itk():
                    single.Execute()
            except RuntimeError:
                raise InputError(f"{path}: slice of DICOM series {chosen.uid} cannot be read (corrupt or truncated)") from None
        raise InputError(f"{folder}: cannot read DICOM series {chosen.uid} ({first_line(exc)})") from None
