"""The segmentation, as the browser downloads it: ``.seg.nrrd`` (Slicer's writer, names and colours)
or ``.nii.gz`` (a label map on the input's grid, the card's label values), through the module's logic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from MedSegModuleLib.segmentation_nodes import save_segmentation, segmentation_to_labels

from MedSegExtension.errors import InputError

from .work_folder import WorkFolder, sanitise_name

FORMATS = {"seg.nrrd": ".seg.nrrd", "nii.gz": ".nii.gz"}


def download_stem(volume_name: str) -> str:
    """The name the browser saves under, without the format's suffix (sanitised like an upload)."""
    return f"{sanitise_name(volume_name) or 'volume'}_segmentation"


def download_name(volume_name: str, fmt: str) -> str:
    if fmt not in FORMATS:
        raise InputError(f"{fmt}: unknown download format (expected {', '.join(FORMATS)})")
    return f"{download_stem(volume_name)}{FORMATS[fmt]}"


def export_segmentation(segmentation_node: Any, volume_node: Any, fmt: str, folder: WorkFolder) -> Path:
    """Write the segmentation in ``fmt`` into the session folder (replacing an earlier export)."""
    from MedSegExtension.io.volumes import write_image

    path = folder.path_for(download_name(volume_node.GetName(), fmt))
    if fmt == "seg.nrrd":
        return save_segmentation(segmentation_node, path, overwrite=True)
    labels, _infos = segmentation_to_labels(segmentation_node, volume_node)
    return write_image(labels, path)
