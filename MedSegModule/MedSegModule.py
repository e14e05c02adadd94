"""MedSeg: 3D U-Net segmentation of CT and MRI in 3D Slicer (thin module file; logic in MedSegModuleLib)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from MedSegModuleLib import model_catalog, self_test, slicer_gui
from MedSegModuleLib import segmentation_logic as segmentation
from MedSegModuleLib import transform_nodes as transforms
from MedSegModuleLib.dependencies import missing_requirements
from MedSegModuleLib.evaluate_section import EvaluateSection
from MedSegModuleLib.parameters import MedSegParameters, Quality
from MedSegModuleLib.sections import InputSection, ReviewSection
from MedSegModuleLib.sparse_section import SparseSection
from slicer.parameterNodeWrapper import parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

DOCS = '<a href="https://github.com/medseg/MedSeg/blob/main/docs/slicer-module.md">Documentation</a>.'


class MedSegModule(ScriptedLoadableModule):
    def __init__(self, parent) -> None:
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "MedSeg"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["MedSeg developers"]
        self.parent.helpText = "Segment CT and MRI with 3D U-Net models into named, coloured segments. " + DOCS
        self.parent.acknowledgementText = "Built on 3D Slicer, PyTorch, MONAI and SimpleITK."


@parameterNodeWrapper
class MedSegModuleParameterNode(MedSegParameters):
    """The module's parameters (fields and their documentation: MedSegModuleLib/parameters.py)."""


class MedSegModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the panel to the logic; the work runs in a subprocess, polled by a timer. The Model and
    Segment sections are wired here; each other section has its controller in MedSegModuleLib."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run: segmentation.SegmentationRun | None = None
        self._extraModels: list[str] = []
        self._catalog = model_catalog.Catalog()
        self._sections: list = []
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSegModule.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegModuleLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.review = ReviewSection(self.ui, self.parameters)
        self._sections = [InputSection(self.ui, self.parameters, self.status, lambda: self._run is not None), self.review,
                          SparseSection(self.ui, self.parameters, self.refreshEnvironment), EvaluateSection(self.ui, self.parameters)]
        self.ui.modelSelector.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.addModelButton.clicked.connect(self.onAddModel)
        self.ui.installDependenciesButton.clicked.connect(self.onInstallDependencies)
        self.ui.runButton.clicked.connect(self.onRun)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.initializeParameterNode()
        qt.QTimer.singleShot(0, self.refreshEnvironment)  # show the panel first; listing models imports torch

    def parameters(self) -> MedSegModuleParameterNode | None:
        return self._parameterNode

    def cleanup(self) -> None:
        self.onCancel()
        self._timer.stop()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        """Stop mirroring the parameter node while hidden; a running segmentation carries on."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancel()  # a closing scene must not receive results
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode: MedSegModuleParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUI)
            self.updateGUI()

    def refreshEnvironment(self) -> None:
        """Dependencies, models and devices (torch is imported only once it is installed)."""
        missing = missing_requirements()
        self.ui.dependenciesLabel.text = ("Missing Python packages: " + ", ".join(r.spec for r in missing)) if missing else ""
        self.ui.installDependenciesButton.visible = bool(missing)
        if missing:  # listing models and devices imports the engine, which needs them
            self.ui.deviceInfoLabel.text = "Install the missing Python packages first."
            return
        self._catalog = model_catalog.list_models(self._extraModels)
        key = self._parameterNode.modelKey if self._parameterNode else ""
        self.onModelChanged(slicer_gui.fill_model_selector(self.ui.modelSelector, self._catalog, key))
        self.ui.deviceInfoLabel.text = model_catalog.describe_devices().reason

    def onModelChanged(self, index: int) -> None:
        choice = self._catalog.find(self.ui.modelSelector.itemData(index) or "")
        self.ui.modelDescriptionLabel.text = choice.summary() if choice else "No model found; add a model folder."
        if self._parameterNode and choice:
            self._parameterNode.modelKey = choice.key

    def updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        running = self._run is not None
        volume = p.inputVolume if p else None
        self.ui.runButton.enabled = bool(volume and p.modelKey) and not running
        self.ui.cancelButton.enabled = running
        for section in self._sections:
            section.update()

    def status(self, text: str, error: bool = False) -> None:
        slicer_gui.show_status(self.ui.statusLabel, self.ui.logTextEdit, text, error)

    def onAddModel(self) -> None:
        folder = slicer_gui.choose_folder(slicer.util.mainWindow(), "Model folder (with model.json)")
        if folder:
            self._extraModels.append(folder)
            self._parameterNode.modelKey = folder
            self.refreshEnvironment()

    def onInstallDependencies(self) -> bool:
        ok = slicer_gui.ensure_dependencies("MedSeg")
        self.refreshEnvironment()
        return ok

    def onRun(self) -> None:
        if missing_requirements() and not self.onInstallDependencies():
            self.status("MedSeg needs its Python packages; nothing was run.", error=True)
            return
        p = self._parameterNode
        try:
            self._run = self.logic.startSegmentation(p)
        except segmentation.MedSegError as exc:
            self._run = None
            self.status(str(exc), error=True)
            return
        self.status(f"Segmenting {p.inputVolume.GetName()} with {self._run.card.name}…")
        self._timer.start()
        self.updateGUI()

    def onPoll(self) -> None:
        """Timer tick: forward progress and log lines; once the engine has ended, collect the result."""
        run = self._run
        slicer_gui.show_events(run.poll(), self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit)
        if not run.done:
            return
        self._timer.stop()
        self._run = None
        try:
            outcome = run.finish()
        except segmentation.CancelledError as exc:
            self.status(str(exc))
        except Exception as exc:  # shown in the panel and the log; the scene is unchanged
            self.status(f"Segmentation failed: {exc}", error=True)
        else:
            self._parameterNode.outputSegmentation = outcome.segmentation_node
            self._parameterNode.uncertaintyVolume = outcome.uncertainty_node
            self.review.show_result(outcome)
            self.ui.progressBar.value = 100
            self.status(f"Done: {outcome.segmentation_node.GetName()} on {outcome.provenance['Device']}")
        self.updateGUI()

    def onCancel(self) -> None:
        """Non-blocking: the engine gets SIGINT now, is terminated after a grace period; onPoll reports.
        Cancels the background work of every section too (fine-tuning, evaluation)."""
        for section in self._sections:
            section.cancel()
        if self._run is not None:
            self._run.cancel()
            self.ui.statusLabel.text = "Cancelling…"


class MedSegModuleLogic(ScriptedLoadableModuleLogic):
    """Entry points for scripts; every operation is in MedSegModuleLib and takes the scene explicitly."""

    def getParameterNode(self) -> MedSegModuleParameterNode:
        return MedSegModuleParameterNode(super().getParameterNode())

    def loadTransform(self, path: str, volumeNode=None, harden: bool = False):
        node = transforms.load_itk_transform(slicer.mrmlScene, path, volumeNode)
        if harden and volumeNode is not None:
            transforms.harden_transform(volumeNode)
        return node

    def startSegmentation(self, p: MedSegModuleParameterNode) -> segmentation.SegmentationRun:
        """Validate (errors raise, nothing is added), write the input and start the engine; returns at once."""
        device = model_catalog.device_argument(p.device.value)
        settings = segmentation.SegmentationSettings(p.modelKey, device, p.quality == Quality.ACCURATE, p.computeUncertainty)
        run = segmentation.SegmentationRun(slicer.mrmlScene, p.inputVolume, settings)
        run.start()
        return run


class MedSegModuleTest(ScriptedLoadableModuleTest):
    """The headless CI runs the same checks (MedSegModuleLib/self_test.py) on a slicer-core scene."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()
        self.workdir = Path(tempfile.mkdtemp(prefix="medseg-selftest-"))

    def loadVolume(self, path: str, name: str):
        return slicer.modules.volumes.logic().AddArchetypeVolume(path, name, 0)

    def runTest(self) -> None:
        resample = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume
        views = [slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{view}") for view in ("Red", "Yellow", "Green")]
        checks = [(self_test.check_segmentation_workflow, ()), (self_test.check_bad_inputs, ()), (self_test.check_cancel, ()),
                  (self_test.check_itk_snap_transform, (resample,)), (self_test.check_sparse_annotation, (views,)),
                  (self_test.check_sparse_bad_inputs, (views,)), (self_test.check_sparse_cancel, ()),
                  (self_test.check_evaluation, ())]
        for check, extra in checks:
            self.setUp()
            self.delayDisplay(check.__doc__.splitlines()[0])
            check(self, slicer.mrmlScene, self.loadVolume, self.workdir, *extra)
        self.delayDisplay("Test passed")
