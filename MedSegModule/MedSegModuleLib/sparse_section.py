"""The panel's 'Sparse annotation' section: buttons -> :mod:`.sparse_annotation`, a timer follows the run.

GUI only (``qt``, ``slicer.util``); every operation it triggers is in the headless-tested logic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import slicer

from MedSegExtension.errors import MedSegError

from . import slicer_gui
from .model_catalog import device_argument
from .sections import RunSection
from .slice_views import VIEW_NAMES, show_slice
from .sparse_annotation import SparseRun, SparseSettings
from .sparse_copy import copy_prediction_into_annotation, default_model_name, save_model_as
from .sparse_report import ordered_suggestions, parse_training_progress, stored_suggestions
from .sparse_slices import mark_slice_in_view, marked_slices, parse_slices, unmark_slice


class SparseSection(RunSection):
    """Mark slices, fine-tune (background, cancellable), copy the prediction, suggestions, save as."""

    failed = "Fine-tuning failed"

    def __init__(self, ui: Any, parameters: Callable[[], Any], models_changed: Callable[[], None],
                 engine_busy: Callable[[], bool], refresh_all: Callable[[], None]) -> None:
        super().__init__(engine_busy, refresh_all)
        self.ui, self.parameters, self.models_changed = ui, parameters, models_changed
        self.suggestion_index = 0
        for name in VIEW_NAMES:
            getattr(ui, f"mark{name}Button").connect("clicked()", lambda view=name: self.onMark(view))
        ui.annotationSelector.connect("nodeAddedByUser(vtkMRMLNode*)", self.onAnnotationCreated)
        ui.paintAnnotationButton.clicked.connect(self.onPaint)
        ui.removeMarkedSliceButton.clicked.connect(self.onRemoveMarked)
        ui.fineTuneButton.clicked.connect(self.onFineTune)
        ui.fineTuneCancelButton.clicked.connect(self.cancel)
        ui.copyPredictionButton.clicked.connect(self.onCopy)
        ui.nextSuggestionButton.clicked.connect(self.onNextSuggestion)
        ui.saveModelAsButton.clicked.connect(self.onSaveModelAs)

    def status(self, text: str, error: bool = False) -> None:
        slicer_gui.show_status(self.ui.sparseStatusLabel, self.ui.logTextEdit, text, error)

    def log(self, text: str) -> None:
        self.ui.logTextEdit.appendPlainText(text)

    def update(self) -> None:
        p = self.parameters()
        volume, annotation = (p.inputVolume, p.annotationSegmentation) if p else (None, None)
        running = self.run is not None
        for name in VIEW_NAMES:
            getattr(self.ui, f"mark{name}Button").enabled = bool(volume and annotation)
        self.ui.paintAnnotationButton.enabled = annotation is not None
        listed = [str(ref) for ref in marked_slices(annotation)] if annotation is not None else []
        shown = self.ui.markedSlicesList
        if [shown.item(row).text() for row in range(shown.count)] != listed:  # refill only on change: keeps the selection
            shown.clear()
            shown.addItems(listed)
        self.ui.removeMarkedSliceButton.enabled = annotation is not None and self.ui.markedSlicesList.count > 0
        self.ui.fineTuneButton.enabled = bool(volume and annotation) and not self.engine_busy()
        self.ui.fineTuneCancelButton.enabled = running
        prediction = p.sparsePrediction if p else None
        self.ui.copyPredictionButton.enabled = bool(prediction and annotation and volume) and not running
        self.ui.nextSuggestionButton.enabled = bool(prediction and volume and stored_suggestions(prediction))

    def guarded(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except MedSegError as exc:
            self.status(str(exc), error=True)
            return None
        finally:
            self.update()

    def onAnnotationCreated(self, node: Any) -> None:
        node.CreateDefaultDisplayNodes()
        volume = self.parameters().inputVolume
        if volume is not None:  # painted on the volume's grid, under its transform: what fine-tuning needs
            node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
            node.SetAndObserveTransformNodeID(volume.GetTransformNodeID())

    def onPaint(self) -> None:
        p = self.parameters()
        slicer_gui.open_in_segment_editor(p.annotationSegmentation, p.inputVolume)

    def onMark(self, view: str) -> None:
        p = self.parameters()
        ref = self.guarded(lambda: mark_slice_in_view(p.annotationSegmentation, slicer_gui.slice_node(view), p.inputVolume))
        if ref is not None:
            self.status(f"Marked {ref} ({view} view) as annotated")

    def onRemoveMarked(self) -> None:
        item = self.ui.markedSlicesList.currentItem()
        if item is not None:
            self.guarded(lambda: unmark_slice(self.parameters().annotationSegmentation, parse_slices(item.text())[0]))

    def onFineTune(self) -> None:
        if not slicer_gui.dependencies_ready(self.status):
            return
        p = self.parameters()

        def start() -> SparseRun:
            if not p.sparseModelName and p.inputVolume is not None:
                p.sparseModelName = default_model_name(p.inputVolume.GetName())
            settings = SparseSettings(p.sparseModelName, p.modelKey or None, p.sparseFromScratch, p.sparseTimeBudget or None,
                                      p.sparseMaxSteps or None, device_argument(p.device.value))
            run = SparseRun(slicer.mrmlScene, p.inputVolume, p.annotationSegmentation, settings)
            run.start()
            return run

        run = self.guarded(start)
        if run is not None:
            for warning in run.warnings:
                self.log(f"Warning: {warning}")
            self.status(f"Fine-tuning {p.sparseModelName} on {run.prepared.slice_spec}…"
                        + (f" ({len(run.warnings)} warning(s), see the log)" if run.warnings else ""))
            self.started(run)

    def show_events(self, events: list[Any]) -> None:
        for event in events:
            if event.kind == "progress":
                self.ui.sparseProgressBar.value = int(round(100 * (event.fraction or 0.0)))
                training = parse_training_progress(event.message)
                self.ui.sparseStatusLabel.text = training.describe() if training else event.message
            elif event.kind == "first_answer":
                node = self.run.first_node if self.run is not None else None
                if node is not None:
                    slicer_gui.show_segmentation(self.parameters().inputVolume, node)
                    self.log(f"first answer shown as '{node.GetName()}'; the fine-tuned one replaces it when ready")
            else:
                self.log(event.message)

    def show_outcome(self, outcome: Any) -> None:
        p = self.parameters()
        p.sparsePrediction = outcome.prediction_node
        self.suggestion_index = 0
        slicer_gui.show_segmentation(p.inputVolume, outcome.prediction_node)
        report = outcome.report
        dice = f"; held-out slice {report.held_out}: Dice {report.held_out_dice:.3f}" if report.held_out else ""
        self.ui.sparseProgressBar.value = 100
        self.status(f"Done: {outcome.prediction_node.GetName()}; model {report.model_name} version "
                    f"{report.model_version} saved{dice}")
        if report.structure_choices:
            self.log(f"kept per structure: {report.describe_choices()}")
        self.models_changed()

    def status_label(self) -> Any:
        return self.ui.sparseStatusLabel

    def onCopy(self) -> None:
        p = self.parameters()
        count = len(marked_slices(p.annotationSegmentation))
        if not slicer.util.confirmOkCancelDisplay(
                f"Outside the {count} marked slice(s), replace the segments of {p.annotationSegmentation.GetName()} "
                f"with the segments of the same name in {p.sparsePrediction.GetName()}? Marked slices stay as they are.",
                "MedSeg: copy prediction into annotation"):
            return
        report = self.guarded(lambda: copy_prediction_into_annotation(p.annotationSegmentation, p.sparsePrediction, p.inputVolume))
        if report is not None:
            skipped = f"; not in the annotation: {', '.join(report.not_in_annotation)}" if report.not_in_annotation else ""
            self.status(f"Copied {', '.join(report.copied) or 'nothing new'} ({report.changed_voxels} voxels){skipped}")

    def onNextSuggestion(self) -> None:
        p = self.parameters()
        marked = marked_slices(p.annotationSegmentation) if p.annotationSegmentation else []
        refs = ordered_suggestions(stored_suggestions(p.sparsePrediction), marked)
        if not refs:
            self.ui.suggestionLabel.text = "No suggested slice left: all are marked."
            return
        ref = refs[self.suggestion_index % len(refs)]
        self.suggestion_index += 1
        node = self.guarded(lambda: show_slice(slicer_gui.slice_nodes(), p.inputVolume, ref))
        if node is not None:
            self.ui.suggestionLabel.text = f"Suggested slice {ref} shown in the {node.GetLayoutName()} view"

    def onSaveModelAs(self) -> None:
        from MedSegExtension.models.registry import check_model_name

        p = self.parameters()
        name = slicer_gui.ask_text("MedSeg: save model as", "Model name (letters, digits, . _ -):", p.sparseModelName)
        if not name or self.guarded(lambda: check_model_name(name)) is None:
            return
        p.sparseModelName = name
        folder = p.sparsePrediction.GetAttribute("MedSeg.ModelFolder") if p.sparsePrediction else None
        if not folder:
            self.status(f"The next fine-tuning saves the model as {name}")
            return
        card = self.guarded(lambda: save_model_as(folder, name))
        if card is not None:
            self.status(f"Saved model {card.name} version {card.version} in {card.folder}")
            self.models_changed()
