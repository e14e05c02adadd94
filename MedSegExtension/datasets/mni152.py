"""The ICBM 2009a symmetric MNI152 template shipped inside the PyPI ``nilearn`` wheel (offline).

The T1 is skull-stripped (brain only, uint8 0..255); grey- and white-matter probability maps
(0..255) share its 1 mm 197x233x189 grid.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from . import require_file
from ._sitk import like, read

PROVIDER = "the PyPI package nilearn"
_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


def data_folder() -> Path:
    """nilearn's ``datasets/data`` folder, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError(f"nilearn: Python package not installed; install {PROVIDER} (scripts/install_data.sh does)")
    return Path(spec.origin).parent / "datasets" / "data"


def mni152_path(which: str) -> Path:
    if which not in _FILES:
        raise InputError(f"MNI152 map {which!r}: unknown (known: {', '.join(_FILES)})")
    return require_file(data_folder() / _FILES[which], PROVIDER)


def load_mni152_t1() -> sitk.Image:
    """The skull-stripped MNI152 2009a T1 (float32)."""
    return sitk.Cast(read(mni152_path("t1")), sitk.sitkFloat32)


def load_mni152_probability(which: str) -> sitk.Image:
    """Grey (``"gm"``) or white (``"wm"``) matter probability, float32 in [0, 1]."""
    if which not in ("gm", "wm"):
        raise InputError(f"MNI152 probability map {which!r}: use 'gm' or 'wm'")
    image = read(mni152_path(which))
    return like((sitk.GetArrayViewFromImage(image).astype(np.float32) / 255.0), image)


def load_mni152_brain_mask(threshold: float = 0.2) -> sitk.Image:
    """Brain mask (uint8 0/1): T1 above ``threshold`` of its maximum, holes filled."""
    from scipy import ndimage

    t1 = read(mni152_path("t1"))
    array = sitk.GetArrayViewFromImage(t1).astype(np.float32)
    mask = ndimage.binary_fill_holes(array > threshold * float(array.max()))
    return like(mask.astype(np.uint8), t1)
