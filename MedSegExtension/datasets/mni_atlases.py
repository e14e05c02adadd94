"""Harvard–Oxford cortical and JHU white-matter atlases in MNI space, from Debian ``mricron-data``.

Both are 1 mm, 182x218x182 (FSL's MNI152 grid). They are read here to be resampled (nearest) onto
another MNI template, for evaluation only; they are never shipped. JHU's header places it in MNI
space. The Harvard–Oxford copy's header does not (its origin is (-90, 0, 0), 126 mm off in y):
:func:`load_harvard_oxford_cortical` keeps its voxel axes and places it by matching the centre of
its labels' bounding box to a given brain mask's, which is the only alignment it can get; its
labels are not lateralized (one value for both hemispheres), so a left/right flip cannot mislabel.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import read_name_table, require_file
from ._sitk import read
from .colin27 import PROVIDER, TEMPLATES

# FSL's HarvardOxford-Cortical.xml order (value = index + 1); the mricron file carries no names.
HARVARD_OXFORD_CORTICAL = (
    "Frontal Pole", "Insular Cortex", "Superior Frontal Gyrus", "Middle Frontal Gyrus",
    "Inferior Frontal Gyrus, pars triangularis", "Inferior Frontal Gyrus, pars opercularis", "Precentral Gyrus",
    "Temporal Pole", "Superior Temporal Gyrus, anterior division", "Superior Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, anterior division", "Middle Temporal Gyrus, posterior division",
    "Middle Temporal Gyrus, temporooccipital part", "Inferior Temporal Gyrus, anterior division",
    "Inferior Temporal Gyrus, posterior division", "Inferior Temporal Gyrus, temporooccipital part",
    "Postcentral Gyrus", "Superior Parietal Lobule", "Supramarginal Gyrus, anterior division",
    "Supramarginal Gyrus, posterior division", "Angular Gyrus", "Lateral Occipital Cortex, superior division",
    "Lateral Occipital Cortex, inferior division", "Intracalcarine Cortex", "Frontal Medial Cortex",
    "Juxtapositional Lobule Cortex", "Subcallosal Cortex", "Paracingulate Gyrus", "Cingulate Gyrus, anterior division",
    "Cingulate Gyrus, posterior division", "Precuneous Cortex", "Cuneal Cortex", "Frontal Orbital Cortex",
    "Parahippocampal Gyrus, anterior division", "Parahippocampal Gyrus, posterior division", "Lingual Gyrus",
    "Temporal Fusiform Cortex, anterior division", "Temporal Fusiform Cortex, posterior division",
    "Temporal Occipital Fusiform Cortex", "Occipital Fusiform Gyrus", "Frontal Operculum Cortex",
    "Central Opercular Cortex", "Parietal Operculum Cortex", "Planum Polare", "Heschl's Gyrus (includes H1 and H2)",
    "Planum Temporale", "Supracalcarine Cortex", "Occipital Pole",
)


def load_jhu_white_matter() -> sitk.Image:
    """JHU ICBM-DTI-81 white-matter labels (uint8, 0..48), in MNI space."""
    return read(require_file(TEMPLATES / "JHU-WhiteMatter-labels-1mm.nii.gz", PROVIDER))


def jhu_names() -> dict[int, str]:
    """JHU value -> tract name, from ``JHU-WhiteMatter-labels-1mm.nii.txt`` (names use underscores)."""
    return read_name_table(TEMPLATES / "JHU-WhiteMatter-labels-1mm.nii.txt", PROVIDER)


def load_harvard_oxford_cortical(brain_mask: sitk.Image) -> sitk.Image:
    """Harvard–Oxford cortical max-probability labels (uint8, 0..48), placed on ``brain_mask``'s brain.

    The file's voxel axes are kept; its origin is set so that its labels' bounding-box centre
    lands on the centre of ``brain_mask``'s non-zero bounding box (physical space).
    """
    atlas = read(require_file(TEMPLATES / "HarvardOxford-cort-maxprob-thr0-1mm.nii.gz", PROVIDER))
    atlas_centre = _box_centre(atlas)
    brain_centre = _box_centre(brain_mask)
    placed = sitk.Image(atlas)
    placed.SetOrigin(tuple(float(o + b - a) for o, a, b in zip(atlas.GetOrigin(), atlas_centre, brain_centre)))
    return placed


def _box_centre(image: sitk.Image) -> np.ndarray:
    """Physical centre of the bounding box of ``image``'s non-zero voxels."""
    array = sitk.GetArrayViewFromImage(image) != 0
    if not array.any():
        raise ValueError("empty image: no bounding box")
    low, high = [], []
    for array_axis in (2, 1, 0):  # i, j, k
        hits = np.flatnonzero(array.any(axis=tuple(a for a in range(3) if a != array_axis)))
        low.append(int(hits[0]))
        high.append(int(hits[-1]))
    corners = [np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in corner]))
               for corner in (low, high)]
    return (corners[0] + corners[1]) / 2.0
