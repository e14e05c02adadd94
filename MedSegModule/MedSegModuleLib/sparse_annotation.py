"""Sparse annotation in Slicer: mark painted slices, fine-tune in the background, review, repeat.

The *annotation* is an ordinary segmentation node that the user paints in Segment Editor; its
segments are the classes. The slices the user has completed are listed in the node attribute
:data:`.sparse_slices.ANNOTATED_SLICES_ATTRIBUTE` (``"i:12;k:40,60"``: the volume's voxel axes, the engine's
``--slices`` syntax); inside a marked slice every unpainted voxel counts as background.

:class:`SparseRun` exports the annotation to a label map on the volume's grid and runs
``python -m MedSegExtension finetune`` in the background. The user's annotation is only read:
the prediction becomes a NEW segmentation node, and errors or a cancel add nothing. The
engine saves the fine-tuned model as a user model (``$MEDSEG_HOME/models/NAME``, then
``NAME-v2``…). :func:`copy_prediction_into_annotation` is the one function that writes into
the annotation, on the user's request, and never inside a marked slice.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from MedSegExtension.errors import InputError
from MedSegExtension.models.card import ModelCard

from .background_task import BackgroundTask, TaskEvent
from .engine_run import EngineRun
from .model_catalog import resolve_model
from .scene_guard import node_ids, nodes_removed_on_error
from .segmentation_nodes import (
    import_segmentation_file,
    place_beside,
)
from .sparse_report import SUGGESTIONS_ATTRIBUTE, FineTuneReport, parse_finetune_output
from .sparse_slices import prepare_annotation
from .volume_conversion import check_scalar_volume, volume_node_to_sitk

ATTRIBUTE_PREFIX = "MedSeg."
FIRST_ANSWER_FILE = "first_answer.seg.nrrd"  # in the run's work folder: the engine writes it before training


# -- the run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SparseSettings:
    """What the panel asks for. The base model is ``base_model`` (a folder or name; None: the engine's
    default model) unless ``from_scratch``; ``home`` sets $MEDSEG_HOME for the engine."""

    model_name: str
    base_model: str | None = None
    from_scratch: bool = False
    time_budget: float | None = None
    max_steps: int | None = None  # None: the engine's step budget, set by the annotation
    device: str = "auto"
    home: str | None = None


@dataclass
class SparseOutcome:
    prediction_node: Any
    report: FineTuneReport
    warnings: list[str]
    log: list[str]


class SparseRun(EngineRun):
    """Fine-tune on the annotation's marked slices; the prediction becomes a NEW segmentation node."""

    what = "fine-tuning"

    def __init__(self, scene: Any, volume_node: Any, annotation_node: Any, settings: SparseSettings,
                 python: str | None = None) -> None:
        from MedSegExtension.models.registry import check_model_name

        check_scalar_volume(volume_node)
        if volume_node.GetScene() is not scene:
            raise InputError(f"{volume_node.GetName()}: input volume is not in this scene")
        check_model_name(settings.model_name)
        if settings.max_steps is not None and settings.max_steps < 1:
            raise InputError(f"maximum steps {settings.max_steps}: must be at least 1")
        use_base = settings.base_model and not settings.from_scratch
        self.base_card: ModelCard | None = resolve_model(settings.base_model) if use_base else None
        self.prepared = prepare_annotation(volume_node, annotation_node)
        super().__init__(python, {"MEDSEG_HOME": settings.home} if settings.home else None)
        self.scene, self.volume_node, self.annotation_node, self.settings = scene, volume_node, annotation_node, settings
        self.first_node: Any = None  # the first answer (before training), shown until the final one replaces it
        self._first_node_ids: set[str] = set()

    def poll(self) -> list[TaskEvent]:
        """New events; a first answer the engine announced becomes a segmentation node at once."""
        events = super().poll()
        if any(event.kind == "first_answer" for event in events):
            self.show_first_answer()
        return events

    def show_first_answer(self) -> Any:
        """Import the engine's first answer as its own node (once); ``None`` if it is not there."""
        path = self.workdir / FIRST_ANSWER_FILE if self.workdir is not None else None
        if self.first_node is not None or path is None or not path.exists() \
                or not self.scene.IsNodePresent(self.volume_node):
            return self.first_node
        from MedSegExtension.io.segmentation_files import read_labelmap

        _labels, info = read_labelmap(path)
        name = f"{self.volume_node.GetName()} {self.settings.model_name} first answer"
        before = node_ids(self.scene)
        with nodes_removed_on_error(self.scene):
            node = import_segmentation_file(self.scene, path, name, info, reference_volume=self.volume_node)
            place_beside(node, self.volume_node)
            node.SetAttribute(ATTRIBUTE_PREFIX + "FirstAnswer", "true")
        self.first_node = node
        self._first_node_ids = node_ids(self.scene) - before  # the node and its display nodes
        return node

    def finish(self) -> SparseOutcome:
        """As :meth:`EngineRun.finish`; the first answer goes, replaced by the final one or, on a cancel
        or an error, so that nothing is added."""
        try:
            return super().finish()
        finally:
            for node_id in self._first_node_ids:
                node = self.scene.GetNodeByID(node_id)
                if node is not None:
                    self.scene.RemoveNode(node)
            self.first_node, self._first_node_ids = None, set()

    @property
    def warnings(self) -> list[str]:
        return list(self.prepared.warnings)

    def write_inputs(self, workdir: Path) -> list[str]:
        from MedSegExtension.io.segmentation_files import write_labelmap
        from MedSegExtension.io.volumes import write_image

        volume = write_image(volume_node_to_sitk(self.volume_node), workdir / "input.nrrd", compress=False)
        labels = write_labelmap(self.prepared.labels, workdir / "annotation.seg.nrrd", self.prepared.classes)
        args = ["finetune", str(volume), "--labels", str(labels), "--slices", self.prepared.slice_spec,
                "--name", self.settings.model_name,
                "--device", self.settings.device, "-o", str(workdir / "prediction.seg.nrrd"), "--progress", "json",
                "--first-output", str(workdir / FIRST_ANSWER_FILE)]
        if self.settings.from_scratch:
            args.append("--from-scratch")
        elif self.base_card is not None:
            args += ["--model", str(self.base_card.folder)]
        if self.settings.max_steps is not None:
            args += ["--max-steps", str(self.settings.max_steps)]
        if self.settings.time_budget:
            args += ["--time-budget", f"{self.settings.time_budget:g}"]
        return args

    def collect(self, task: BackgroundTask) -> SparseOutcome:
        from MedSegExtension import __version__

        assert self.workdir is not None
        if not self.scene.IsNodePresent(self.volume_node):
            raise InputError(f"{self.volume_node.GetName()}: the volume was removed during fine-tuning")
        report = parse_finetune_output(task.lines)
        card = ModelCard.load(report.model_folder)
        name = f"{self.volume_node.GetName()} {report.model_name} prediction"
        attributes = {
            "Model": report.model_name, "ModelVersion": report.model_version, "ModelFolder": report.model_folder,
            "AnnotatedSlices": self.prepared.slice_spec, "InputVolume": self.volume_node.GetName(),
            "Annotation": self.annotation_node.GetName(), "HeldOutSlice": report.held_out or "",
            "HeldOutDice": "" if report.held_out_dice is None else f"{report.held_out_dice:.3f}",
            "StructureChoices": json.dumps(report.structure_choices),
            "Time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "EngineVersion": __version__,
        }
        with nodes_removed_on_error(self.scene):
            node = import_segmentation_file(self.scene, self.workdir / "prediction.seg.nrrd", name, card.labels,
                                            reference_volume=self.volume_node)
            place_beside(node, self.volume_node)
            for key, value in attributes.items():
                node.SetAttribute(ATTRIBUTE_PREFIX + key, value)
            node.SetAttribute(SUGGESTIONS_ATTRIBUTE, json.dumps(report.suggestions))
        return SparseOutcome(node, report, self.warnings, list(task.lines))
