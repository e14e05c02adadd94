"""The panel's 'Input' (transform) and 'Review' sections: buttons -> logic, labels <- parameter node.

GUI only (``qt``, ``slicer.util``); the 'Sparse annotation' and 'Evaluate' sections have their own
modules (:mod:`.sparse_section`, :mod:`.evaluate_section`). Every section has ``update()`` (called
when the parameter node changes) and ``cancel()`` (called when the scene closes).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import slicer

from MedSegExtension.errors import MedSegError

from . import slicer_gui
from . import transform_nodes as transforms


class InputSection:
    """Load an ITK transform onto the input volume, show its rotation, harden it."""

    def __init__(self, ui: Any, parameters: Callable[[], Any], status: Callable[..., None], busy: Callable[[], bool]) -> None:
        self.ui, self.parameters, self.status, self.busy = ui, parameters, status, busy
        ui.loadTransformButton.clicked.connect(self.onLoadTransform)
        ui.hardenTransformButton.clicked.connect(self.onHarden)

    def update(self) -> None:
        p = self.parameters()
        volume = p.inputVolume if p else None
        transform = volume.GetParentTransformNode() if volume else None
        self.ui.transformLabel.text = transform.GetName() if transform else "none"
        self.ui.eulerAnglesLabel.text = transforms.describe_rotation(transform)
        self.ui.hardenTransformButton.enabled = transform is not None and not self.busy()

    def cancel(self) -> None:
        pass

    def onLoadTransform(self) -> None:
        path = slicer_gui.choose_file(slicer.util.mainWindow(), "Load ITK transform", transforms.TRANSFORM_FILE_FILTER)
        if not path:
            return
        p = self.parameters()
        try:
            node = transforms.load_itk_transform(slicer.mrmlScene, path, p.inputVolume)
            if p.hardenOnLoad and p.inputVolume is not None:
                transforms.harden_transform(p.inputVolume)
            self.status(f"Loaded {Path(path).name} as {node.GetName()}")
        except MedSegError as exc:
            self.status(str(exc), error=True)
        self.update()

    def onHarden(self) -> None:
        volume = self.parameters().inputVolume
        if volume and transforms.harden_transform(volume):
            self.status(f"Hardened the transform of {volume.GetName()}")
        self.update()


class ReviewSection:
    """The latest segmentation: Segment Editor hand-off, uncertainty overlay, volumes table."""

    def __init__(self, ui: Any, parameters: Callable[[], Any]) -> None:
        self.ui, self.parameters = ui, parameters
        ui.editInSegmentEditorButton.clicked.connect(self.onEditInSegmentEditor)
        ui.showUncertaintyCheckBox.toggled.connect(self.onShowUncertainty)
        ui.refreshVolumesButton.clicked.connect(self.updateVolumesTable)

    def update(self) -> None:
        p = self.parameters()
        self.ui.editInSegmentEditorButton.enabled = bool(p and p.outputSegmentation)

    def cancel(self) -> None:
        pass

    def show_result(self, outcome: Any) -> None:
        """After a segmentation run: show it, the uncertainty overlay if any, and the volumes."""
        slicer_gui.show_segmentation(self.parameters().inputVolume, outcome.segmentation_node)
        self.ui.showUncertaintyCheckBox.checked = outcome.uncertainty_node is not None
        self.updateVolumesTable()

    def onEditInSegmentEditor(self) -> None:
        p = self.parameters()
        seg = p.outputSegmentation
        source = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
        slicer_gui.open_in_segment_editor(seg, source or p.inputVolume)

    def onShowUncertainty(self, show: bool) -> None:
        p = self.parameters()
        slicer_gui.show_uncertainty(p.inputVolume, p.uncertaintyVolume if show else None)

    def updateVolumesTable(self) -> None:
        slicer_gui.fill_volumes_table(self.ui.volumesTable, self.parameters().outputSegmentation)
