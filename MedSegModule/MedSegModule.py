"""MedSeg: 3D U-Net segmentation of CT and MRI in 3D Slicer (thin module file; logic in MedSegModuleLib).

Slicer imports this file at start-up: only the parameter fields load here; the panel's sections,
the engine's helpers and the self-test are imported when they are first used, and torch never
loads in Slicer's own process (the engine runs in a ``PythonSlicer`` subprocess).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import qt
import slicer
import vtk
from MedSegModuleLib.parameters import MedSegParameters, Quality
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
        self.parent.dependencies = ["Segmentations", "SegmentEditor", "Volumes"]
        self.parent.contributors = ["MedSeg developers"]
        self.parent.helpText = "Segment CT and MRI with 3D U-Net models into named, coloured segments. " + DOCS
        self.parent.acknowledgementText = "Built on 3D Slicer, PyTorch, MONAI and SimpleITK."


@parameterNodeWrapper
class MedSegModuleParameterNode(MedSegParameters):
    """The module's parameters (fields and their documentation: MedSegModuleLib/parameters.py)."""


class MedSegModuleWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Wires the panel to the logic; the work runs in a subprocess, polled by a timer. The Segment
    section is wired here; each other section has its controller in MedSegModuleLib."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None  # the running segmentation (segmentation_logic.SegmentationRun)
        self._sections: list = []
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPoll)

    def setup(self) -> None:
        from MedSegModuleLib.evaluate_section import EvaluateSection
        from MedSegModuleLib.model_section import ModelSection
        from MedSegModuleLib.sections import InputSection, ReviewSection
        from MedSegModuleLib.sparse_section import SparseSection

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MedSegModule.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MedSegModuleLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.review = ReviewSection(self.ui, self.parameters)
        self.models = ModelSection(self.ui, self.parameters, self.status)
        self._sections = [InputSection(self.ui, self.parameters, self.status, self.engineBusy), self.models, self.review,
                          SparseSection(self.ui, self.parameters, self.models.refresh, self.engineBusy, self.updateGUI),
                          EvaluateSection(self.ui, self.parameters, self.engineBusy, self.updateGUI)]
        self.ui.runButton.clicked.connect(self.onRun)
        self.ui.cancelButton.clicked.connect(self.onCancel)
        self.initializeParameterNode()
        qt.QTimer.singleShot(0, self.models.refresh)  # show the panel first

    def parameters(self) -> MedSegModuleParameterNode | None:
        return self._parameterNode

    def engineBusy(self) -> bool:
        """One engine job at a time (they would share one GPU): segmentation, fine-tuning or evaluation."""
        return self._run is not None or any(getattr(section, "run", None) is not None for section in self._sections)

    def cleanup(self) -> None:
        """Module unloaded or Slicer exiting: end every engine process tree (blocking, seconds), stop the timers."""
        self._timer.stop()
        for section in self._sections:
            if hasattr(section, "shutdown"):
                section.shutdown()
        run, self._run = self._run, None
        if run is not None:
            run.shutdown()
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
        self.onCancel()  # a closing scene must not receive results; the engines' trees end within seconds
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

    def updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        volume = p.inputVolume if p else None
        self.ui.runButton.enabled = bool(volume and p.modelKey) and not self.engineBusy()
        self.ui.cancelButton.enabled = self._run is not None
        for section in self._sections:
            section.update()

    def status(self, text: str, error: bool = False) -> None:
        from MedSegModuleLib import slicer_gui

        slicer_gui.show_status(self.ui.statusLabel, self.ui.logTextEdit, text, error)

    def onRun(self) -> None:
        from MedSegModuleLib import slicer_gui
        from MedSegModuleLib.segmentation_logic import MedSegError

        if not slicer_gui.dependencies_ready(self.status):
            self.models.refresh()
            return
        p = self._parameterNode
        try:
            self._run = self.logic.startSegmentation(p)
        except MedSegError as exc:
            self._run = None
            self.status(str(exc), error=True)
            return
        self.status(f"Segmenting {p.inputVolume.GetName()} with {self._run.card.name}…")
        self._timer.start()
        self.updateGUI()

    def onPoll(self) -> None:
        """Timer tick: forward progress and log lines; once the engine's tree has gone, collect the result."""
        from MedSegModuleLib import slicer_gui
        from MedSegModuleLib.segmentation_logic import CancelledError

        run = self._run
        slicer_gui.show_events(run.poll(), self.ui.progressBar, self.ui.statusLabel, self.ui.logTextEdit)
        if not run.done:
            return
        self._timer.stop()
        self._run = None
        try:
            outcome = run.finish()
        except CancelledError as exc:
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
        """Non-blocking: the engine's process tree gets SIGTERM now, SIGKILL after 3 s; onPoll reports
        "cancelled". Cancels the background work of every section too (fine-tuning, evaluation)."""
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
        from MedSegModuleLib import transform_nodes as transforms

        node = transforms.load_itk_transform(slicer.mrmlScene, path, volumeNode)
        if harden and volumeNode is not None:
            transforms.harden_transform(volumeNode)
        return node

    def startSegmentation(self, p: MedSegModuleParameterNode):
        """Validate (errors raise, nothing is added), write the input and start the engine; returns at once.
        Missing Python packages are one ``MedSegError`` line, before anything starts."""
        from MedSegModuleLib.dependencies import missing_requirements
        from MedSegModuleLib.segmentation_logic import MedSegError

        missing = missing_requirements()
        if missing:
            raise MedSegError("MedSeg needs Python packages that are not installed: " + ", ".join(r.spec for r in missing))
        from MedSegModuleLib import model_catalog
        from MedSegModuleLib import segmentation_logic as segmentation

        device = model_catalog.device_argument(p.device.value)
        settings = segmentation.SegmentationSettings(p.modelKey, device, p.quality == Quality.ACCURATE, p.computeUncertainty)
        run = segmentation.SegmentationRun(slicer.mrmlScene, p.inputVolume, settings)
        run.start()
        return run


class MedSegModuleTest(ScriptedLoadableModuleTest):
    """Quick checks by default (a tiny model made on the spot: seconds); the heavy ones (large-volume
    cancel) with MEDSEG_SELFTEST_HEAVY=1. Without torch or the engine's other packages: skipped, with
    the reason. The headless CI runs the same checks (MedSegModuleLib/self_test.py) on slicer-core."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def loadVolume(self, path: str, name: str):
        return slicer.modules.volumes.logic().AddArchetypeVolume(path, name, 0)

    def runTest(self) -> None:
        from MedSegModuleLib.dependencies import self_test_skip_reason

        reason = self_test_skip_reason()
        if reason:
            self.delayDisplay(f"MedSeg self-test skipped: {reason}")
            return
        from MedSegModuleLib import self_test

        resample = slicer.vtkSlicerVolumesLogic.ResampleVolumeToReferenceVolume
        views = [slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{view}") for view in ("Red", "Yellow", "Green")]
        for check, extra in self_test.selected_checks(resample, views, heavy=self_test.heavy_requested()):
            self.setUp()
            self.delayDisplay(check.__doc__.splitlines()[0])
            with tempfile.TemporaryDirectory(prefix="medseg-selftest-") as workdir:
                check(self, slicer.mrmlScene, self.loadVolume, Path(workdir), *extra)
        self.delayDisplay("Test passed")
