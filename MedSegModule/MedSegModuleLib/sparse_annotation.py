"""Sparse annotation in Slicer: mark painted slices, fine-tune in the background, review, repeat.

The *annotation* is an ordinary segmentation node that the user paints in Segment Editor; its
segments are the classes. The slices the user has completed are listed in the node attribute
:data:`ANNOTATED_SLICES_ATTRIBUTE` (``"i:12;k:40,60"``: the volume's voxel axes, the engine's
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
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from MedSegExtension.errors import InputError
from MedSegExtension.models.card import LabelInfo, ModelCard
from MedSegExtension.sparse.annotations import VOXEL_AXES, SliceRef

from .background_task import BackgroundTask, TaskEvent
from .engine_run import EngineRun
from .model_catalog import resolve_model
from .scene_guard import node_ids, nodes_removed_on_error
from .segmentation_nodes import (
    export_segments,
    import_segmentation_file,
    place_beside,
    segmentation_to_labels,
    segments,
)
from .slice_views import slice_in_view
from .volume_conversion import check_scalar_volume, node_ijk_to_ras, volume_node_to_sitk, vtk_matrix

ANNOTATED_SLICES_ATTRIBUTE = "MedSeg.AnnotatedSlices"
SUGGESTIONS_ATTRIBUTE = "MedSeg.Suggestions"
ATTRIBUTE_PREFIX = "MedSeg."
FIRST_ANSWER_FILE = "first_answer.seg.nrrd"  # in the run's work folder: the engine writes it before training
_PROGRESS = re.compile(r"step (\d+), loss ([-\d.eE+naninf]+), ~(\d+) s left")
_SAVED = re.compile(r"^saved model (\S+) version (\S+) in (.+)$")
_HELD_OUT = re.compile(r"^held-out slice (\S+): mean Dice ([\d.]+)$")
_SUGGESTION_LINE = re.compile(r"^\s+([ijk]): (.*)$")
_SUGGESTION = re.compile(r"(\d+) \(([\d.]+)\)")


# -- the list of marked slices -------------------------------------------------------------------


def format_slices(refs: Iterable[SliceRef]) -> str:
    """``"i:3;k:40,60"``: per axis (i, j, k), indices ascending, no duplicates."""
    by_axis: dict[str, set[int]] = {axis: set() for axis in VOXEL_AXES}
    for ref in refs:
        by_axis[ref.axis].add(int(ref.index))
    return ";".join(f"{axis}:{','.join(str(i) for i in sorted(indices))}" for axis, indices in by_axis.items() if indices)


def parse_slices(text: str | None) -> list[SliceRef]:
    """The slices of a stored list (``"k:40,60;j:100"``), sorted by axis then index."""
    refs: set[SliceRef] = set()
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        match = re.fullmatch(r"([ijk])\s*:\s*([\d,\s]+)", part)
        if not match:
            raise InputError(f"annotated slice list: cannot read {part!r} (expected e.g. 'k:40,60')")
        refs.update(SliceRef(match.group(1), int(n)) for n in match.group(2).split(",") if n.strip())
    return sorted(refs, key=lambda r: (r.axis, r.index))


def marked_slices(annotation_node: Any) -> list[SliceRef]:
    return parse_slices(annotation_node.GetAttribute(ANNOTATED_SLICES_ATTRIBUTE))


def set_marked_slices(annotation_node: Any, refs: Iterable[SliceRef]) -> list[SliceRef]:
    text = format_slices(refs)
    annotation_node.SetAttribute(ANNOTATED_SLICES_ATTRIBUTE, text)
    return parse_slices(text)


def mark_slice(annotation_node: Any, ref: SliceRef) -> list[SliceRef]:
    return set_marked_slices(annotation_node, [*marked_slices(annotation_node), ref])


def unmark_slice(annotation_node: Any, ref: SliceRef) -> list[SliceRef]:
    return set_marked_slices(annotation_node, [r for r in marked_slices(annotation_node) if r != ref])


def mark_slice_in_view(annotation_node: Any, slice_node: Any, volume_node: Any) -> SliceRef:
    """Add the voxel slice of ``volume_node`` shown in a slice view to the annotation's list."""
    if annotation_node is None:
        raise InputError("no annotation segmentation selected")
    check_scalar_volume(volume_node)
    ref = slice_in_view(slice_node, volume_node)
    mark_slice(annotation_node, ref)
    return ref


def known_mask(shape_kji: Sequence[int], refs: Iterable[SliceRef]) -> np.ndarray:
    """(k, j, i) bool: voxels inside the marked slices."""
    mask = np.zeros(tuple(shape_kji), dtype=bool)
    for ref in refs:
        index: list[Any] = [slice(None)] * 3
        index[ref.array_axis] = ref.index
        mask[tuple(index)] = True
    return mask


# -- checks on the annotation --------------------------------------------------------------------


def check_annotation_geometry(annotation_node: Any, volume_node: Any) -> None:
    """InputError unless every painted layer of the annotation lies on the volume's voxel grid."""
    name, volume = annotation_node.GetName(), volume_node.GetName()
    if annotation_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"annotation {name!r} and volume {volume!r} are under different transforms; "
                         "put them under the same one (Data module)")
    volume_matrix = node_ijk_to_ras(volume_node)
    inverse = np.linalg.inv(volume_matrix)
    segmentation = annotation_node.GetSegmentation()
    for layer in range(segmentation.GetNumberOfLayers()):
        image = segmentation.GetLayerDataObject(layer)
        if image is None:
            continue
        extent = image.GetExtent()
        if extent[1] < extent[0] or extent[3] < extent[2] or extent[5] < extent[4]:
            continue  # nothing painted in this layer
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        layer_matrix = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        in_volume_voxels = inverse @ layer_matrix  # must be the identity up to an integer shift
        axes_match = np.allclose(in_volume_voxels[:3, :3], np.eye(3), atol=1e-3)
        shift = in_volume_voxels[:3, 3]
        if not axes_match or not np.allclose(shift, np.round(shift), atol=1e-3):
            spacing = tuple(round(float(s), 3) for s in np.linalg.norm(layer_matrix[:3, :3], axis=0))
            volume_spacing = tuple(round(float(s), 3) for s in np.linalg.norm(volume_matrix[:3, :3], axis=0))
            raise InputError(
                f"annotation {name!r} is on a different voxel grid than {volume!r} (spacing {spacing} mm vs "
                f"{volume_spacing} mm, or shifted/rotated); paint it with {volume!r} as the source volume "
                "(Segment Editor) or resample it onto that volume"
            )


@dataclass
class PreparedAnnotation:
    """The annotation as the engine gets it: labels on the volume grid, the classes kept, warnings."""

    labels: sitk.Image
    classes: list[LabelInfo]
    slices: list[SliceRef]
    warnings: list[str] = field(default_factory=list)

    @property
    def slice_spec(self) -> str:
        return format_slices(self.slices)


def prepare_annotation(volume_node: Any, annotation_node: Any, refs: Sequence[SliceRef] | None = None) -> PreparedAnnotation:
    """Check the annotation and export it; a class with no painted voxel in the marked slices is
    dropped with a warning. Raises InputError with one line for every unusable input."""
    check_scalar_volume(volume_node)
    if annotation_node is None:
        raise InputError("no annotation segmentation selected; create one and paint a segment per class")
    if not annotation_node.IsA("vtkMRMLSegmentationNode"):
        raise InputError(f"{annotation_node.GetName()}: the annotation must be a segmentation")
    name = annotation_node.GetName()
    if annotation_node.GetScene() is not volume_node.GetScene():
        raise InputError(f"annotation {name!r} is not in the volume's scene")
    if not segments(annotation_node):
        raise InputError(f"annotation {name!r} has no segment; add one segment per class and paint it")
    labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    if annotation_node.GetSegmentation().GetSourceRepresentationName() != labelmap:
        raise InputError(f"annotation {name!r} is not stored as a binary labelmap; paint it in Segment Editor")
    refs = list(marked_slices(annotation_node) if refs is None else refs)
    if not refs:
        raise InputError(f"annotation {name!r} has no marked slice; paint a slice completely, then "
                         "'Mark current slice as annotated'")
    size = volume_node.GetImageData().GetDimensions()
    for ref in refs:
        extent = size[VOXEL_AXES.index(ref.axis)]
        if not 0 <= ref.index < extent:
            raise InputError(f"marked slice {ref} is outside {volume_node.GetName()!r} ({ref.axis} runs 0..{extent - 1}); "
                             "remove it from the list")
    check_annotation_geometry(annotation_node, volume_node)
    labels, infos = segmentation_to_labels(annotation_node, volume_node)
    array = sitk.GetArrayFromImage(labels)
    known = known_mask(array.shape, refs)
    present = set(np.unique(array[known]).tolist())
    kept, warnings = [], []
    for info in infos:
        if info.value in present:
            kept.append(info)
        else:
            warnings.append(f"segment {info.name!r} has no painted voxel in the marked slices; left out of fine-tuning")
            array[array == info.value] = 0
    if not kept:
        raise InputError(f"annotation {name!r} has no labelled voxel in the marked slices "
                         f"({format_slices(refs)}); paint the structures there")
    cleaned = sitk.GetImageFromArray(array)
    cleaned.CopyInformation(labels)
    return PreparedAnnotation(cleaned, kept, refs, warnings)


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
class TrainingProgress:
    step: int
    loss: float
    seconds_left: int

    def describe(self) -> str:
        return f"step {self.step} · loss {self.loss:.3f} · about {self.seconds_left} s left"


def parse_training_progress(message: str) -> TrainingProgress | None:
    """The engine's ``"step 12, loss 0.532, ~98 s left"`` as numbers (None for other messages)."""
    match = _PROGRESS.search(message)
    if not match:
        return None
    return TrainingProgress(int(match.group(1)), float(match.group(2)), int(match.group(3)))


@dataclass
class FineTuneReport:
    """What ``medseg finetune`` printed: the saved model, the held-out check, suggestions."""

    model_name: str
    model_version: str
    model_folder: str
    held_out: str | None
    held_out_dice: float | None
    suggestions: dict[str, list[tuple[int, float]]]
    # per structure, the answer kept (network, growing, interpolation): the engine's JSON summary
    structure_choices: dict[str, str] = field(default_factory=dict)

    def describe_choices(self) -> str:
        return ", ".join(f"{name}: {how}" for name, how in self.structure_choices.items())


def parse_finetune_output(lines: Iterable[str]) -> FineTuneReport:
    saved = held_out = None
    suggestions: dict[str, list[tuple[int, float]]] = {}
    choices: dict[str, str] = {}
    in_suggestions = False
    for line in lines:
        text = line.rstrip()
        if text.startswith('{"result"'):
            choices = _structure_choices(text) or choices
        elif match := _SAVED.match(text):
            saved = match.groups()
        elif match := _HELD_OUT.match(text):
            held_out = (match.group(1), float(match.group(2)))
        elif text.startswith("slices to annotate next"):
            in_suggestions = True
        elif in_suggestions and (match := _SUGGESTION_LINE.match(text)):
            suggestions[match.group(1)] = [(int(i), float(s)) for i, s in _SUGGESTION.findall(match.group(2))]
    if saved is None:
        raise InputError("the fine-tuning ended without saying where it saved the model")
    return FineTuneReport(saved[0], saved[1], saved[2], held_out[0] if held_out else None,
                          held_out[1] if held_out else None, suggestions, choices)


def _structure_choices(text: str) -> dict[str, str]:
    """``structure_choices`` of the engine's final ``{"result": {...}}`` line (``--progress json``)."""
    try:
        summary = json.loads(text).get("result", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    choices = summary.get("structure_choices") if isinstance(summary, dict) else None
    return {str(name): str(how) for name, how in choices.items()} if isinstance(choices, dict) else {}


def parse_suggestions_json(text: str) -> dict[str, list[tuple[int, float]]]:
    """``medseg suggest --json`` output: ``{"k": [{"index": 12, "score": 0.9}, …], …}``."""
    data = json.loads(text)
    return {axis: [(int(p["index"]), float(p["score"])) for p in picks] for axis, picks in data.items()}


def ordered_suggestions(suggestions: Mapping[str, Sequence[Sequence[float]]], marked: Iterable[SliceRef] = ()) -> list[SliceRef]:
    """All suggested slices, most uncertain first, without those already marked."""
    done = set(marked)
    ranked = sorted(((float(score), axis, int(index)) for axis, picks in suggestions.items() for index, score in picks),
                    key=lambda item: (-item[0], item[1], item[2]))
    return [SliceRef(axis, index) for _score, axis, index in ranked if SliceRef(axis, index) not in done]


def stored_suggestions(node: Any) -> dict[str, list[tuple[int, float]]]:
    text = node.GetAttribute(SUGGESTIONS_ATTRIBUTE) if node is not None else None
    return {axis: [(int(i), float(s)) for i, s in picks] for axis, picks in json.loads(text).items()} if text else {}


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


# -- after fine-tuning -----------------------------------------------------------------------------


@dataclass
class CopyReport:
    copied: list[str]  # annotation segments that took the prediction outside the marked slices
    not_in_annotation: list[str]  # prediction segments with no annotation segment of that name
    changed_voxels: int


def _oriented_mask(mask: np.ndarray, volume_node: Any) -> Any:
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask.shape[::-1])
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(mask.astype(np.uint8).ravel()), deep=True))
    image.SetImageToWorldMatrix(vtk_matrix(node_ijk_to_ras(volume_node)))
    return image


def copy_prediction_into_annotation(annotation_node: Any, prediction_node: Any, volume_node: Any) -> CopyReport:
    """Outside the marked slices, each annotation segment becomes the prediction's segment of the
    same name. Inside marked slices nothing changes; segments without a namesake are kept."""
    if annotation_node is None or prediction_node is None:
        raise InputError("choose both the annotation and a prediction")
    if annotation_node is prediction_node:
        raise InputError("the prediction and the annotation are the same segmentation")
    check_scalar_volume(volume_node)
    check_annotation_geometry(annotation_node, volume_node)
    if prediction_node.GetTransformNodeID() != volume_node.GetTransformNodeID():
        raise InputError(f"prediction {prediction_node.GetName()!r} and volume {volume_node.GetName()!r} are under "
                         "different transforms; put them under the same one (Data module)")
    ours = segments(annotation_node)
    by_name = {segment.GetName(): index + 1 for index, (_id, segment) in enumerate(ours)}
    theirs = [(segment_id, segment.GetName()) for segment_id, segment in segments(prediction_node)]
    matched = [(segment_id, name) for segment_id, name in theirs if name in by_name]
    if not matched:
        raise InputError(f"no segment of {prediction_node.GetName()!r} has the name of a segment of "
                         f"{annotation_node.GetName()!r}; nothing to copy")
    current = sitk.GetArrayFromImage(export_segments(annotation_node, [i for i, _s in ours], range(1, len(ours) + 1), volume_node))
    predicted = sitk.GetArrayFromImage(
        export_segments(prediction_node, [i for i, _n in matched], [by_name[n] for _i, n in matched], volume_node))
    outside = ~known_mask(current.shape, marked_slices(annotation_node))
    targets = sorted({by_name[n] for _i, n in matched})
    wanted = current.copy()
    wanted[outside & np.isin(current, targets)] = 0
    wanted[outside & (predicted > 0)] = predicted[outside & (predicted > 0)]
    changed = [value for value in range(1, len(ours) + 1) if np.any((current == value) != (wanted == value))]
    mode = slicer.vtkSlicerSegmentationsModuleLogic.MODE_REPLACE
    # Shrink every changed segment first, then grow: no voxel is ever claimed by two segments.
    for masks in ([(current == v) & (wanted == v) for v in changed], [wanted == v for v in changed]):
        for value, mask in zip(changed, masks):
            segment_id = ours[value - 1][0]
            if not slicer.vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment(
                    _oriented_mask(mask, volume_node), annotation_node, segment_id, mode):
                raise InputError(f"could not write segment {ours[value - 1][1].GetName()!r} of {annotation_node.GetName()!r}")
    return CopyReport([ours[v - 1][1].GetName() for v in changed],
                      [n for _i, n in theirs if n not in by_name], int(np.count_nonzero(current != wanted)))


def default_model_name(volume_name: str) -> str:
    """A valid model name from a volume name ("CT chest" -> "CT-chest-sparse")."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", volume_name).strip("-._") or "volume"
    return f"{stem[:56]}-sparse"


def save_model_as(model_folder: str | Path, name: str, user_dir: str | Path | None = None) -> ModelCard:
    """Save a copy of a fine-tuned model under another name (NAME, NAME-v2…; never overwriting)."""
    from MedSegExtension.models.registry import ModelRegistry, next_user_model_folder, verify_weights

    card = ModelCard.load(model_folder)
    weights = verify_weights(card)
    folder, version = next_user_model_folder(name, ModelRegistry(user=Path(user_dir) if user_dir else None))
    source = f"{card.name} {card.version}"
    folder.mkdir(parents=True)
    try:
        shutil.copy2(weights, folder / card.weights_file)
        card.name, card.version, card.folder = name, str(version), folder
        card.training = {**(card.training or {}), "copied_from": source}
        card.save(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return ModelCard.load(folder)

