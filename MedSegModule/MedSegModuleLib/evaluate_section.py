"""The panel's 'Evaluate' section: the segment mapping table, the background run, table, chart, report.

GUI only (``qt``, ``slicer.util``); the computation is :class:`.evaluation.EvaluationRun`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt
import slicer

from MedSegExtension.errors import MedSegError

from . import slicer_gui
from .evaluation import EvaluationOutcome, EvaluationRun, export_report
from .sections import RunSection
from .segmentation_nodes import segments

SAME_NAME = "(same name)"
LEAVE_OUT = "(leave out)"


class EvaluateSection(RunSection):
    """Prediction vs reference: mapping, evaluate (background, cancellable), show, export."""

    failed = "Evaluation failed"

    def __init__(self, ui: Any, parameters: Callable[[], Any], engine_busy: Callable[[], bool],
                 refresh_all: Callable[[], None]) -> None:
        super().__init__(engine_busy, refresh_all)
        self.ui, self.parameters = ui, parameters
        self.outcome: EvaluationOutcome | None = None
        self.mapping_key: tuple = ()
        ui.evaluateButton.clicked.connect(self.onEvaluate)
        ui.evaluateCancelButton.clicked.connect(self.cancel)
        ui.exportReportButton.clicked.connect(self.onExportReport)

    def status(self, text: str, error: bool = False) -> None:
        slicer_gui.show_status(self.ui.evaluateStatusLabel, self.ui.logTextEdit, text, error)

    def update(self) -> None:
        p = self.parameters()
        prediction, reference = (p.evaluatePrediction, p.evaluateReference) if p else (None, None)
        running = self.run is not None
        self.ui.evaluateButton.enabled = bool(prediction and reference) and not self.engine_busy()
        self.ui.evaluateCancelButton.enabled = running
        self.ui.exportReportButton.enabled = self.outcome is not None
        self.fill_mapping(prediction, reference)

    def fill_mapping(self, prediction: Any, reference: Any) -> None:
        """One row per prediction segment; refilled only when the segments or their names change."""
        names = [s.GetName() for _i, s in segments(prediction)] if prediction else []
        choices = [s.GetName() for _i, s in segments(reference)] if reference else []
        key = (tuple(names), tuple(choices))
        if key == self.mapping_key:
            return
        previous = self.mapping()
        self.mapping_key = key
        table = self.ui.evaluateMappingTable
        table.setRowCount(len(names))
        for row, name in enumerate(names):
            table.setItem(row, 0, qt.QTableWidgetItem(name))
            combo = qt.QComboBox()
            combo.addItems([SAME_NAME, *choices, LEAVE_OUT])
            chosen = previous.get(name, "")
            combo.setCurrentIndex(max(0, combo.findText(LEAVE_OUT if chosen is None else chosen)) if name in previous else 0)
            table.setCellWidget(row, 1, combo)

    def mapping(self) -> dict[str, str | None]:
        """Prediction name -> reference name (None: leave out); rows left at "(same name)" are absent."""
        table, result = self.ui.evaluateMappingTable, {}
        for row in range(table.rowCount):
            item, combo = table.item(row, 0), table.cellWidget(row, 1)
            if item is None or combo is None or combo.currentText == SAME_NAME:
                continue
            result[item.text()] = None if combo.currentText == LEAVE_OUT else combo.currentText
        return result

    def onEvaluate(self) -> None:
        if not slicer_gui.dependencies_ready(self.status):
            return
        p = self.parameters()

        def start() -> EvaluationRun:
            run = EvaluationRun(slicer.mrmlScene, p.evaluatePrediction, p.evaluateReference, self.mapping(),
                                surface=p.evaluateSurface)
            run.start()
            return run

        try:
            run = start()
        except MedSegError as exc:
            self.status(str(exc), error=True)
            self.update()
        else:
            self.status(f"Evaluating {p.evaluatePrediction.GetName()} against {p.evaluateReference.GetName()}…")
            self.started(run)

    def show_events(self, events: list[Any]) -> None:
        slicer_gui.show_events(events, self.ui.evaluateProgressBar, self.ui.evaluateStatusLabel, self.ui.logTextEdit)

    def show_outcome(self, outcome: EvaluationOutcome) -> None:
        self.outcome = outcome
        for warning in outcome.warnings:
            self.ui.logTextEdit.appendPlainText(f"Warning: {warning}")
        slicer_gui.show_table_and_chart(outcome.table_node, outcome.chart_node)
        self.ui.evaluateProgressBar.value = 100
        self.status(f"Done: {outcome.table_node.GetName()}; mean Dice (foreground) {outcome.mean_foreground_dice:.3f}")

    def status_label(self) -> Any:
        return self.ui.evaluateStatusLabel

    def onExportReport(self) -> None:
        folder = slicer_gui.choose_folder(slicer.util.mainWindow(), "Folder for the HTML report")
        if not folder or self.outcome is None:
            return
        try:
            path = export_report(self.outcome, folder)
        except MedSegError as exc:
            self.status(str(exc), error=True)
        else:
            self.status(f"Wrote {path}")
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))
