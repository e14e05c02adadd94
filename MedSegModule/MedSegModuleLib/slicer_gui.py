"""The few helpers that need the running Slicer application (dialogs, module switching, views).

Kept out of the testable logic on purpose: everything here only forwards to Slicer's GUI.
"""

from __future__ import annotations

import logging
import tempfile
import traceback
from pathlib import Path
from typing import Any

import qt
import slicer

from MedSegExtension.errors import InputError

from .dependencies import PROTECTED_PACKAGES, constraints_text, install_plan, missing_requirements
from .segmentation_nodes import segment_volumes
from .slice_views import VIEW_NAMES


def _pytorch_utils() -> Any | None:
    try:
        import PyTorchUtils  # the SlicerPyTorch extension
    except ImportError:
        return None
    return PyTorchUtils.PyTorchUtilsLogic()


def ensure_dependencies(requester: str = "MedSeg") -> bool:
    """Install what the engine lacks after the user confirms; True when nothing is missing.

    Every failure is shown in a dialog (the console alone is not seen), with pip's output as details.
    """
    missing = missing_requirements()
    if not missing:
        return True
    torch_logic = _pytorch_utils()
    plan = "\n".join(f"- {line}" for line in install_plan(missing, torch_logic is not None))
    if not slicer.util.confirmOkCancelDisplay(
        f"{requester} needs Python packages that are not installed yet. Install them now? "
        "This can take several minutes.",
        f"{requester}: install Python packages",
        detailedText=plan,
    ):
        return False
    try:
        with slicer.util.WaitCursor():
            _install(missing, torch_logic)
    except Exception as exc:  # pip's CalledProcessError, a network or permission error, PyTorchUtils' own
        details = getattr(exc, "output", None) or getattr(exc, "stderr", None) or traceback.format_exc()
        slicer.util.errorDisplay(f"{requester}: installing Python packages failed: {exc}", detailedText=str(details))
        return False
    still = missing_requirements()
    if still:
        slicer.util.errorDisplay(f"{requester}: still missing after installation: " + ", ".join(req.spec for req in still)
                                 + ". Restart Slicer and try again.")
    return not still


def _install(missing: list, torch_logic: Any | None) -> None:
    """torch first (through the PyTorch extension if there is one), then the rest with pip, with
    Slicer's own packages and that torch pinned."""
    for req in missing:
        if req.project == "torch":
            if torch_logic is not None:
                torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=req.specifier.split(",")[0])
            else:
                slicer.util.pip_install(req.spec)
    others = [req.spec for req in missing if req.project != "torch"]
    if not others:
        return
    with tempfile.TemporaryDirectory(prefix="medseg-pip-") as folder:
        constraints = Path(folder) / "constraints.txt"
        constraints.write_text(constraints_text())
        try:
            import slicer.packaging as packaging  # Slicer >= 5.12; not an attribute of slicer until imported
        except ImportError:
            packaging = None
        if packaging is not None and hasattr(packaging, "pip_install"):
            packaging.pip_install(others, constraints=str(constraints), skip_packages=[*PROTECTED_PACKAGES, "torch"])
        else:
            slicer.util.pip_install(others + ["-c", str(constraints)])


def dependencies_ready(status: Any) -> bool:
    """Before an engine run: offer to install what is missing; ``status`` gets the refusal."""
    if missing_requirements() and not ensure_dependencies("MedSeg"):
        status("MedSeg needs its Python packages; nothing was run.", error=True)
        return False
    return True


def show_error(text: str, details: str = "") -> None:
    """A visible error: a dialog, and the line in Slicer's log."""
    logging.error(f"MedSeg: {text}")
    slicer.util.errorDisplay(text, **({"detailedText": details} if details else {}))


def open_in_segment_editor(segmentation_node: Any, source_volume: Any | None) -> None:
    """Switch to Segment Editor with this segmentation and its source volume selected."""
    slicer.util.selectModule("SegmentEditor")
    editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
    editor.setSegmentationNode(segmentation_node)
    if source_volume is not None:
        editor.setSourceVolumeNode(source_volume)  # (setMasterVolumeNode is the removed old name)


def show_uncertainty(volume_node: Any | None, uncertainty_node: Any | None, opacity: float = 0.4) -> None:
    """Show the uncertainty map over the input in the slice views (or hide it when None)."""
    slicer.util.setSliceViewerLayers(
        background=volume_node if volume_node is not None else "keep-current",
        foreground=uncertainty_node,
        foregroundOpacity=opacity if uncertainty_node is not None else 0.0,
    )


def show_segmentation(volume_node: Any, segmentation_node: Any) -> None:
    slicer.util.setSliceViewerLayers(background=volume_node, fit=False)
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility(True)


def show_status(label: Any, log_view: Any, text: str, error: bool = False) -> None:
    """A status line in the panel, also in the panel's log and Slicer's log."""
    label.text = text
    label.setStyleSheet("color: #c0392b" if error else "")
    log_view.appendPlainText(text)
    (logging.error if error else logging.info)(f"MedSeg: {text}")


def show_events(events: Any, progress_bar: Any, label: Any, log_view: Any) -> None:
    """Progress lines move the bar and the status; log lines go to the panel's log."""
    for event in events:
        if event.kind == "progress":
            progress_bar.value = int(round(100 * (event.fraction or 0.0)))
            label.text = event.message
        else:
            log_view.appendPlainText(event.message)


def fill_model_selector(combo: Any, catalog: Any, key: str) -> int:
    """List the catalog's models (data: the model folder) and select ``key``; returns the index."""
    combo.blockSignals(True)
    combo.clear()
    for choice in catalog.models:
        combo.addItem(choice.label, choice.key)
    combo.blockSignals(False)
    for problem in catalog.problems:  # shown in the panel by the caller too
        logging.warning(f"MedSeg: {problem}")
    index = max(0, combo.findData(key))
    combo.setCurrentIndex(index)
    return index


def fill_volumes_table(table: Any, segmentation_node: Any | None) -> None:
    rows = segment_volumes(segmentation_node) if segmentation_node is not None else []
    table.setRowCount(len(rows))
    for row, volume in enumerate(rows):
        for column, text in enumerate((volume.name, f"{volume.millilitres:.2f}", str(volume.voxels))):
            table.setItem(row, column, qt.QTableWidgetItem(text))


def slice_node(view: str) -> Any:
    """The slice node of a view of the layout ("Red", "Yellow", "Green")."""
    node = slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{view}")
    if node is None:
        widget = slicer.app.layoutManager().sliceWidget(view)
        node = widget.mrmlSliceNode() if widget is not None else None
    if node is None:
        raise InputError(f"there is no {view} slice view in this layout")
    return node


def slice_nodes() -> list[Any]:
    """The Red, Yellow and Green slice nodes that exist."""
    return [node for node in (slicer.mrmlScene.GetNodeByID(f"vtkMRMLSliceNode{v}") for v in VIEW_NAMES) if node is not None]


def show_table_and_chart(table_node: Any, chart_node: Any) -> None:
    """Switch to a layout with a table and a plot view and show these two nodes there."""
    slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
    application = slicer.app.applicationLogic()
    selection = application.GetSelectionNode()
    selection.SetActiveTableID(table_node.GetID())  # (not the deprecated SetReference... names)
    selection.SetActivePlotChartID(chart_node.GetID())
    application.PropagateTableSelection()
    application.PropagatePlotChartSelection()


def ask_text(title: str, label: str, text: str = "") -> str:
    """A one-line text from the user ('' when cancelled)."""
    return qt.QInputDialog.getText(slicer.util.mainWindow(), title, label, qt.QLineEdit.Normal, text) or ""


def choose_file(parent: Any, title: str, file_filter: str) -> str:
    return qt.QFileDialog.getOpenFileName(parent, title, "", file_filter) or ""


def choose_folder(parent: Any, title: str) -> str:
    return qt.QFileDialog.getExistingDirectory(parent, title) or ""
