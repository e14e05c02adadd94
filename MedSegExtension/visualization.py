"""Pictures of results: three orthogonal slices with the segments overlaid and a legend."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .io.atomic import atomic_output
from .models.card import LabelInfo
from .preprocessing.spatial import reorient


def _display_slices(image: sitk.Image, labels: sitk.Image) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Axial, coronal, sagittal slices through the labels' centre, in radiological display order."""
    image = reorient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    labels = reorient(labels, "LPS")
    volume = sitk.GetArrayFromImage(image)  # (S, P, L) axes: k superior, j posterior, i left
    label_array = sitk.GetArrayFromImage(labels)
    sx, sy, sz = image.GetSpacing()
    present = np.argwhere(label_array > 0)
    k, j, i = (present.mean(axis=0).astype(int) if len(present) else np.array(volume.shape) // 2)
    # Radiological convention: patient left on the right of the picture, superior up, anterior up.
    return [
        ("axial", volume[k], label_array[k], sy / sx),
        ("coronal", volume[::-1, j, :], label_array[::-1, j, :], sz / sx),
        ("sagittal", volume[::-1, :, i], label_array[::-1, :, i], sz / sy),
    ]


def render_overlay(
    image: sitk.Image,
    labels: sitk.Image,
    label_info: Sequence[LabelInfo],
    path: str | os.PathLike[str],
    title: str = "",
    alpha: float = 0.45,
) -> Path:
    """Write a PNG with three orthogonal slices, the segments in their card colours, and a legend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    slices = _display_slices(image, labels)
    figure, axes = plt.subplots(1, 3, figsize=(13, 5.2), facecolor="black")
    lookup = np.zeros((max([info.value for info in label_info] + [1]) + 1, 4))
    for info in label_info:
        lookup[info.value] = (*[c / 255 for c in info.color], alpha)
    for axis, (name, plane, plane_labels, aspect) in zip(axes, slices):
        low, high = np.percentile(plane, [1, 99.5])
        axis.imshow(plane, cmap="gray", vmin=low, vmax=high, aspect=aspect, interpolation="bilinear")
        axis.imshow(lookup[np.clip(plane_labels, 0, len(lookup) - 1)], aspect=aspect, interpolation="nearest")
        axis.set_title(name, color="white")
        axis.axis("off")
    present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    handles = [Patch(color=[c / 255 for c in info.color], label=info.name) for info in label_info if info.value in present]
    if handles:
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), frameon=False, labelcolor="white")
    if title:
        figure.suptitle(title, color="white")
    figure.tight_layout(rect=(0, 0.08 if handles else 0, 1, 0.95))
    path = Path(path)
    with atomic_output(path) as tmp:
        figure.savefig(tmp, dpi=90, facecolor="black", format="png")
    plt.close(figure)
    return path
