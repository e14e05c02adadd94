"""Colin27 (``ch2``) and the AAL atlas drawn on it, from Debian ``mricron-data``.

HELD OUT: Colin27 and everything derived from its anatomy (AAL, ``ch2bet``) is evaluation data and
must never be used for training. ``ch2.nii.gz`` is a real single-subject T1 (27 averaged scans,
1 mm, 181x217x181, whole head); ``aal.nii.gz`` (116 regions, names in ``aal.nii.txt``) shares its grid.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import read_name_table, require_file
from ._sitk import like, read
from .labels import apply_mapping

TEMPLATES = Path(os.environ.get("MEDSEG_MRICRON_TEMPLATES", "/usr/share/mricron/templates"))
PROVIDER = "the Debian package mricron-data"

# AAL value -> bundled class value (AAL "_L" is the patient's left).
AAL_TO_CLASS: dict[int, int] = {
    71: 1, 72: 2,  # Caudate_L/R -> caudate
    73: 3, 74: 4,  # Putamen_L/R -> lentiform
    75: 3, 76: 4,  # Pallidum_L/R -> lentiform
    29: 5, 30: 6,  # Insula_L/R
    77: 7, 78: 8,  # Thalamus_L/R
    37: 9, 38: 10,  # Hippocampus_L/R
}


def colin27_t1_path() -> Path:
    return require_file(TEMPLATES / "ch2.nii.gz", PROVIDER)


def load_colin27_t1() -> sitk.Image:
    """The Colin27 T1 (whole head), as float32."""
    return sitk.Cast(read(colin27_t1_path()), sitk.sitkFloat32)


def load_colin27_brain_mask() -> sitk.Image:
    """Brain mask of Colin27 (uint8 0/1) from the brain-extracted ``ch2bet.nii.gz``."""
    image = read(require_file(TEMPLATES / "ch2bet.nii.gz", PROVIDER))
    return like((sitk.GetArrayViewFromImage(image) > 0).astype(np.uint8), image)


def load_aal() -> sitk.Image:
    """The AAL atlas (uint8, 0..116) on the Colin27 grid."""
    return read(require_file(TEMPLATES / "aal.nii.gz", PROVIDER))


def aal_names() -> dict[int, str]:
    """AAL value -> region name, from ``aal.nii.txt`` (lines ``value name code``)."""
    return read_name_table(TEMPLATES / "aal.nii.txt", PROVIDER)


def load_colin27_labels() -> sitk.Image:
    """The bundled classes (uint8, 0..10) on the Colin27 grid, derived from AAL."""
    aal = load_aal()
    return like(apply_mapping(sitk.GetArrayViewFromImage(aal), AAL_TO_CLASS), aal)
