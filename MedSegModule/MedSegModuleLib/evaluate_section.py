"""The panel's 'Evaluate' section: the segment mapping table, the background run, table, chart, report.

GUI only (``qt``, ``slicer.util``); the computation is :class:`.evaluation.EvaluationRun`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt
import slicer

from MedSegExtension.errors import CancelledError, MedSegError

from . import slicer_gui
from .evaluation import EvaluationOutcome, EvaluationRun, export_report
from .segmentation_nodes import segments

SAME_NAME = "(same name)"
LEAVE_OUT = "(leave out)"


class EvaluateSection:
    """Prediction vs reference: mapping, evaluate (background, cancellable), show, export."""

    def __init__(self, ui: Any, parameters: Callable[[], Any]) -> None:
        self.ui, self.parameters = ui, parameters
        self.run: EvaluationRun | None = None
        self.outcome: EvaluationOutcome | None = None
        self.mapping_key: tuple = ()
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)
        ui.evaluateButton.clicked.connect(self.onEvaluate)
        ui.evaluateCancelButton.clicked.connect(self.cancel)
        ui.exportReportButton.clicked.connect(self.onExportReport)

    def status(self, text: str, error: bool = False) -> None:
        slicer_gui.show_status(self.ui.evaluateStatusLabel, self.ui.logTextEdit, text, error)

    def update(self) -> None:
        p = self.parameters()
        prediction, reference = (p.evaluatePrediction, p.evaluateReference) if p else (None, None)
        running = self.run is not None
        self.ui.evaluateButton.enabled = bool(prediction and reference) and not running
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
        p = self.parameters()

        def start() -> EvaluationRun:
            run = EvaluationRun(slicer.mrmlScene, p.evaluatePrediction, p.evaluateReference, self.mapping(),
                                surface=p.evaluateSurface)
            run.start()
            return run

        try:
            self.run = start()
        except MedSegError as exc:
            self.status(str(exc), error=True)
        else:
            self.status(f"Evaluating {p.evaluatePrediction.GetName()} against {p.evaluateReference.GetName()}…")
            self.timer.start()
        self.update()

    def onPoll(self) -> None:
        run = self.run
        slicer_gui.show_events(run.poll(), self.ui.evaluateProgressBar, self.ui.evaluateStatusLabel, self.ui.logTextEdit)
        if not run.done:
            return
        self.timer.stop()
        self.run = None
        try:
            outcome = run.finish()
        except CancelledError as exc:
            self.status(str(exc))
        except Exception as exc:  # nothing was added
            self.status(f"Evaluation failed: {exc}", error=True)
        else:
            self.outcome = outcome
            for warning in outcome.warnings:
                self.ui.logTextEdit.appendPlainText(f"Warning: {warning}")
            slicer_gui.show_table_and_chart(outcome.table_node, outcome.chart_node)
            self.ui.evaluateProgressBar.value = 100
            self.status(f"Done: {outcome.table_node.GetName()}; mean Dice (foreground) {outcome.mean_foreground_dice:.3f}")
        self.update()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.ui.evaluateStatusLabel.text = "Cancelling…"

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
