"""The panel's 'Model' section: Python packages, the model list, and the compute devices.

GUI only (``qt``, ``slicer.util``). Nothing here imports torch: models are listed from their
cards, and the devices are asked of the engine's own Python in a subprocess (a timer follows it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import qt
import slicer

from MedSegExtension.errors import MedSegError

from . import model_catalog, slicer_gui
from .dependencies import missing_requirements


class ModelSection:
    """Missing packages and their install button; model selector and "add model folder"; devices."""

    def __init__(self, ui: Any, parameters: Callable[[], Any], status: Callable[..., None]) -> None:
        self.ui, self.parameters, self.status = ui, parameters, status
        self.extra_models: list[str] = []
        self.catalog = model_catalog.Catalog()
        self.query = None  # the engine subprocess listing devices
        self.devices = ""  # its answer, once there is one (devices do not change while Slicer runs)
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onDeviceQueryPoll)
        ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        ui.addModelButton.clicked.connect(self.onAddModel)
        ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)

    def update(self) -> None:
        pass

    def cancel(self) -> None:
        pass

    def shutdown(self) -> None:
        self.timer.stop()
        query, self.query = self.query, None
        if query is not None:
            query.stop()

    def refresh(self) -> None:
        """Packages, models, then (non-blocking) devices; any failure is shown, not only logged."""
        try:
            missing = missing_requirements()
            self.ui.dependenciesLabel.text = ("Missing Python packages: " + ", ".join(r.spec for r in missing)) if missing else ""
            self.ui.installDependenciesButton.visible = bool(missing)
            self.catalog = model_catalog.list_models(self.extra_models)
            p = self.parameters()
            self.onModelChanged(slicer_gui.fill_model_selector(self.ui.modelSelector, self.catalog, p.modelKey if p else ""))
            if self.catalog.problems:
                self.status("A model folder could not be read (all in the log): " + self.catalog.problems[0], error=True)
            if missing:  # the engine cannot start without them
                self.ui.deviceInfoLabel.text = "Install the missing Python packages first."
            elif self.devices:
                self.ui.deviceInfoLabel.text = self.devices
            elif self.query is None:
                self.ui.deviceInfoLabel.text = "Looking for a GPU…"
                self.query = model_catalog.start_device_query()
                self.timer.start()
        except Exception as exc:  # a broken installation: say so where the user looks
            slicer_gui.show_error(f"MedSeg could not list its models and devices: {exc}")

    def onDeviceQueryPoll(self) -> None:
        query = self.query
        query.poll()
        if not query.done:
            return
        self.timer.stop()
        self.query = None
        try:
            self.devices = self.ui.deviceInfoLabel.text = model_catalog.device_query_result(query).reason
        except MedSegError as exc:  # e.g. a torch that fails to import: the engine cannot run at all
            self.ui.deviceInfoLabel.text = "The engine cannot start; see the error."
            self.status(str(exc), error=True)
            slicer_gui.show_error(f"MedSeg: {exc}", details="\n".join(query.lines[-30:]))

    def onModelChanged(self, index: int) -> None:
        choice = self.catalog.find(self.ui.modelSelector.itemData(index) or "")
        self.ui.modelDescriptionLabel.text = choice.summary() if choice else "No model found; add a model folder."
        p = self.parameters()
        if p and choice:
            p.modelKey = choice.key

    def onAddModel(self) -> None:
        folder = slicer_gui.choose_folder(slicer.util.mainWindow(), "Model folder (with model.json)")
        if not folder:
            return
        problem = model_catalog.folder_problem(folder)
        if problem:  # nothing is added; the user sees why
            slicer_gui.show_error(f"Not a MedSeg model folder: {problem}")
            return
        self.extra_models.append(folder)
        self.parameters().modelKey = folder
        self.refresh()

    def onInstallDependencies(self) -> bool:
        ok = slicer_gui.ensure_dependencies("MedSeg")
        self.refresh()
        return ok
