"""The panel's 'Input' (transform) and 'Review' sections: buttons -> logic, labels <- parameter node.

GUI only (``qt``, ``slicer.util``); the 'Sparse annotation' and 'Evaluate' sections have their own
modules (:mod:`.sparse_section`, :mod:`.evaluate_section`) and follow their background run with
:class:`RunSection`. Every section has ``update()`` (called when the parameter node changes) and
``cancel()`` (called when the scene closes); a :class:`RunSection` also has ``shutdown()`` (the
blocking stop of widget clean-up and application exit). One engine job runs at a time (one GPU):
while any runs, every section's start button is disabled (``engine_busy``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import qt
import slicer

from MedSegExtension.errors import CancelledError, MedSegError

from . import slicer_gui
from . import transform_nodes as transforms


class RunSection:
    """A section that follows one background :class:`~.engine_run.EngineRun` (``self.run``) with a timer.

    Start the run, set ``self.run`` and start ``self.timer``; each tick forwards the run's events
    (:meth:`show_events`), and once it has ended: :meth:`show_outcome`, or its cancel or error in the
    status (``"<failed>: <error>"``). Subclasses also provide ``status()``, ``update()`` and
    :meth:`status_label` (where "Cancelling…" shows).
    """

    failed = "Run failed"

    def __init__(self, engine_busy: Callable[[], bool], refresh_all: Callable[[], None]) -> None:
        self.engine_busy, self.refresh_all = engine_busy, refresh_all  # any engine job running; update every section
        self.run: Any | None = None
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onPoll)

    def show_events(self, events: list[Any]) -> None:
        raise NotImplementedError

    def show_outcome(self, outcome: Any) -> None:
        raise NotImplementedError

    def status_label(self) -> Any:
        raise NotImplementedError

    def onPoll(self) -> None:
        run = self.run
        self.show_events(run.poll())
        if not run.done:
            return
        self.timer.stop()
        self.run = None
        try:
            outcome = run.finish()
        except CancelledError as exc:
            self.status(str(exc))
        except Exception as exc:  # nothing was added, the scene is unchanged
            self.status(f"{self.failed}: {exc}", error=True)
        else:
            self.show_outcome(outcome)
        self.refresh_all()

    def started(self, run: Any) -> None:
        """A run has started: follow it, and disable every start button."""
        self.run = run
        self.timer.start()
        self.refresh_all()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()
            self.status_label().text = "Cancelling…"

    def shutdown(self) -> None:
        """Stop following, end the engine's process tree and remove its files (blocking, a few seconds)."""
        self.timer.stop()
        run, self.run = self.run, None
        if run is not None:
            run.shutdown()


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
        show = outcome.uncertainty_node is not None
        self.ui.showUncertaintyCheckBox.checked = show
        self.onShowUncertainty(show)  # a checkbox set to its current value sends no signal: the overlay would go stale
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
