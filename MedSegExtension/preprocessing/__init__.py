"""Preprocessing described by a model card, and its exact inverse.

``prepare_case`` turns input volumes into the array a network sees (canonical orientation,
model spacing, optional crop to the foreground, normalized intensities); ``restore_labels``
brings network probabilities back onto the input's own voxel grid.
"""

from .case import PreparedCase, prepare_case, restore_probabilities
from .intensity import foreground_mask, normalize
from .spatial import crop_box, reorient, resample_to_spacing

__all__ = [
    "PreparedCase",
    "crop_box",
    "foreground_mask",
    "normalize",
    "prepare_case",
    "reorient",
    "resample_to_spacing",
    "restore_probabilities",
]
