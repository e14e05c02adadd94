"""ITK transform files and the rotated frame of seed 003 (ITK-SNAP), without Slicer.

Direction and coordinates: every transform maps fixed→moving points in LPS millimetres,
as ITK defines it; see :mod:`.rotation` for RAS and Slicer's to-parent matrix.
"""

from .itk_files import TRANSFORM_SUFFIXES, itk_snap_text, read_transform, write_transform
from .resampling import Grid, frame_grid, inverse_transform, resample_back, resample_into_frame
from .rotation import (
    affine_from_matrix,
    affine_matrix,
    euler_angles_zyx,
    linear_parts,
    rotation_from_euler_zyx,
    rotation_part,
    slicer_to_parent_ras_matrix,
    to_ras_matrix,
    transform_from_slicer_to_parent_ras,
)

__all__ = [
    "TRANSFORM_SUFFIXES",
    "Grid",
    "affine_from_matrix",
    "affine_matrix",
    "euler_angles_zyx",
    "frame_grid",
    "inverse_transform",
    "itk_snap_text",
    "linear_parts",
    "read_transform",
    "resample_back",
    "resample_into_frame",
    "rotation_from_euler_zyx",
    "rotation_part",
    "slicer_to_parent_ras_matrix",
    "to_ras_matrix",
    "transform_from_slicer_to_parent_ras",
    "write_transform",
]
