"""Evaluate the session's segmentation against an uploaded reference, with the module's
:class:`~MedSegModuleLib.evaluation.EvaluationRun` (the engine's metrics and HTML report).

A reference is a ``.seg.nrrd`` (segments matched by name) or a label map whose values are the
model card's (named after the card's labels, so they match the prediction's segments).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from MedSegModuleLib.evaluation import EvaluationOutcome
from MedSegModuleLib.segmentation_nodes import (
    SEGMENTATION_SUFFIX,
    import_segmentation_file,
    labels_to_segmentation_node,
)

from MedSegExtension.errors import InputError
from MedSegExtension.io.atomic import compound_suffix
from MedSegExtension.models.card import LabelInfo

TABLE_METRICS = (("dice", "Dice"), ("hd95_mm", "HD95 mm"), ("volume_diff_percent", "Vol. diff %"))


def load_reference(scene: Any, path: Path, name: str, volume_node: Any, labels: list[LabelInfo]) -> Any:
    """A NEW segmentation node from an uploaded reference file."""
    if compound_suffix(path) == SEGMENTATION_SUFFIX:
        return import_segmentation_file(scene, path, name, reference_volume=volume_node)
    from MedSegExtension.io.volumes import read_image

    image = read_image(path)
    if "float" in image.GetPixelIDTypeAsString():
        raise InputError(f"{path.name}: a reference label map must have integer voxels")
    return labels_to_segmentation_node(scene, image, labels, name, volume_node)


def _shown(value: Any) -> str:
    if value is None:
        return "–"
    number = float(value)
    return "–" if math.isnan(number) else f"{number:.3g}"


def table_rows(outcome: EvaluationOutcome) -> list[dict[str, str]]:
    """One row per class for the page: the segment's name and the table's metrics as text."""
    return [{"name": str(row["name"]), **{key: _shown(row.get(key)) for key, _title in TABLE_METRICS}}
            for row in outcome.results["classes"]]
