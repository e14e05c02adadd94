"""The MedSeg web app: trame-slicer's MRML scene and views, driven by the Slicer module's logic.

Load (upload or a server path given at start) -> Segment (the module's ``SegmentationRun``, an
engine subprocess, followed from the event loop; progress and Cancel) -> review (segments with
names, colours, mL, show/hide, opacity) -> correct (trame-slicer's paint/erase effects on the
same segmentation node) -> download (``.seg.nrrd`` / ``.nii.gz``, written by the module's logic).

One process serves one session: its scene and its work folder (removed at exit) belong to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedSegModuleLib.evaluation import EvaluationOutcome, EvaluationRun
from MedSegModuleLib.model_catalog import list_models, resolve_model
from MedSegModuleLib.segmentation_logic import SegmentationOutcome, SegmentationRun, SegmentationSettings
from MedSegModuleLib.segmentation_nodes import segment_volumes
from trame.app import TrameApp
from trame.app.file_upload import ClientFile
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectErase, SegmentationEffectPaint
from undo_stack import UndoStack

from MedSegExtension.errors import CancelledError, MedSegError

from .engine_job import follow
from .evaluation_step import load_reference, table_rows
from .exports import download_stem, export_segmentation
from .history import History
from .ui import build_ui
from .work_folder import DEFAULT_UPLOAD_LIMIT_MB, WorkFolder, volume_suffix

LAYOUT = "Axial Primary"
TOOLS = {"paint": SegmentationEffectPaint, "erase": SegmentationEffectErase}


def hex_colour(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


class MedSegWebApp(TrameApp):
    def __init__(self, server=None, upload_limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB) -> None:
        super().__init__(server)
        self.server.enable_module(trame_slicer_module)
        self.slicer = SlicerApp()
        register_rca_factories(self.slicer.view_manager, self.server)
        self.layout_manager = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout_manager.set_layout(LAYOUT)
        self.folder = WorkFolder(upload_limit_mb)
        self.volume_node: Any = None
        self.segmentation_node: Any = None
        self.history = History()
        self.reference_node: Any = None
        self.report_html = ""
        self._cancel = None
        self._job: asyncio.Future | None = None
        self.undo_stack = UndoStack(undo_limit=20)
        self.slicer.segmentation_editor.set_undo_stack(self.undo_stack)
        for signal in self.undo_stack.signals():
            signal.connect(self._on_undo_changed)
        self._init_state()
        triggers = {
            name: self.server.controller.trigger_name(handler)
            for name, handler in (("upload", self.on_upload), ("segment", self.on_segment),
                                  ("cancel", self.on_cancel), ("paint", lambda: self.toggle_tool("paint")),
                                  ("erase", lambda: self.toggle_tool("erase")), ("download", self.on_download),
                                  ("undo", self.undo_stack.undo), ("select", self.select_segment),
                                  ("visible", self.set_segment_visible), ("reference", self.on_reference),
                                  ("evaluate", self.on_evaluate), ("report", self.on_report),
                                  ("history", self.select_upload))
        }
        self.ui = build_ui(self.server, self.layout_manager, triggers)
        self.state.change("opacity")(self._on_opacity)
        self.server.controller.on_server_exited.add(lambda **_: self.folder.remove())

    def _init_state(self) -> None:
        catalog = list_models()
        for problem in catalog.problems:
            logging.warning(f"MedSeg web: {problem}")
        self.state.update({
            "models": [{"title": choice.label, "value": choice.key} for choice in catalog.models],
            "model": catalog.models[0].key if catalog.models else "",
            "device": "auto", "volume_name": "", "download_stem": "", "status": "Upload a volume to start.",
            "error": "", "running": False, "progress": 0, "segments": [], "tool": "", "active_segment": "",
            "can_undo": False, "reference_name": "", "evaluation": [], "mean_dice": "", "history": [], "current": -1,
        })

    # -- load ----------------------------------------------------------------------------
    def on_upload(self, files: list[dict] | None) -> None:
        if not files:
            return
        try:
            upload = ClientFile(files[0])
            path = self.folder.save_upload(upload.name or "", upload.content or b"")
            self.load_volume(path, Path(upload.name or path.name).name)
        except MedSegError as exc:
            self._fail(str(exc))

    def load_volume(self, path: Path, display_name: str | None = None) -> None:
        """Load a volume file (or a folder of DICOM files); earlier uploads stay in the history."""
        files = sorted(str(p) for p in path.iterdir()) if path.is_dir() else [str(path)]
        nodes = self.slicer.io_manager.load_volumes(files)
        if not nodes:
            raise MedSegError(f"{display_name or path.name}: Slicer could not read this volume")
        name = display_name or path.name
        suffix = volume_suffix(name)
        nodes[0].SetName(name[: -len(suffix)] if suffix else name)
        self.history.add(nodes[0])
        self._show_upload()
        self.state.status = "Volume loaded."

    def select_upload(self, index: int) -> None:
        """Show an earlier upload of this session with its segmentation."""
        if self.state.running:
            return
        try:
            self.history.select(int(index))
        except (IndexError, ValueError, TypeError):
            return
        self._show_upload()
        self.state.status = f"{self.volume_node.GetName()} shown."

    def _show_upload(self) -> None:
        """Make the history's active upload the one the views, tools and downloads use."""
        self.toggle_tool("")
        for upload in self.history.uploads:
            if upload.segmentation_node is not None and upload.segmentation_node.GetDisplayNode():
                upload.segmentation_node.GetDisplayNode().SetVisibility(upload is self.history.active)
        self._remove(self.reference_node)
        self.reference_node, self.report_html = None, ""
        active = self.history.active
        self.volume_node, self.segmentation_node = active.volume_node, active.segmentation_node
        self.slicer.display_manager.show_volume(self.volume_node, vr_preset="MR-Default")
        for upload in self.history.uploads:
            if upload is not active and self.slicer.volume_rendering.has_vr_display_node(upload.volume_node):
                self.slicer.volume_rendering.get_vr_display_node(upload.volume_node).SetVisibility(False)
        if self.segmentation_node is not None:
            self.slicer.segmentation_editor.set_active_segmentation(self.segmentation_node, self.volume_node)
            self.state.active_segment = self.slicer.segmentation_editor.get_active_segment_id()
        self.slicer.display_manager.reset_views()
        self.state.update({"volume_name": self.volume_node.GetName(), "error": "", "progress": 0,
                           "reference_name": "", "evaluation": [], "mean_dice": "",
                           "history": self.history.items(), "current": self.history.current,
                           "download_stem": download_stem(self.volume_node.GetName())})
        self._refresh_segments()

    def _remove(self, node: Any) -> None:
        if node is not None and self.slicer.scene.IsNodePresent(node):
            self.slicer.scene.RemoveNode(node)

    # -- background runs (segmentation, evaluation) ----------------------------------------
    def _start(self, make_run: Callable[[], Any], busy: str, done: Callable[[Any], None]) -> None:
        """Run an engine job as its own task: the trigger returns at once, so Cancel (and every
        other request) is answered while the engine works."""
        if not self.state.running:
            self._job = asyncio.ensure_future(self._follow(make_run, busy, done))

    async def _follow(self, make_run: Callable[[], Any], busy: str, done: Callable[[Any], None]) -> None:
        self.toggle_tool("")
        with self.state:
            self.state.update({"running": True, "progress": 0, "error": "", "status": busy})
        try:
            outcome = await follow(make_run(), self._on_progress, self._set_cancel)
        except CancelledError as exc:
            with self.state:
                self.state.update({"running": False, "progress": 0, "status": str(exc)})
            return
        except MedSegError as exc:
            with self.state:
                self.state.update({"running": False, "progress": 0})
                self._fail(str(exc))
            return
        finally:
            self._cancel = None
        with self.state:
            self.state.update({"running": False, "progress": 100})
            done(outcome)

    # -- segment -------------------------------------------------------------------------
    def on_segment(self) -> None:
        if self.volume_node is not None:
            settings = SegmentationSettings(model=self.state.model)
            self._start(lambda: SegmentationRun(self.slicer.scene, self.volume_node, settings),
                        "Segmenting...", self._segmented)

    def _segmented(self, outcome: SegmentationOutcome) -> None:
        self._show_segmentation(outcome.segmentation_node, outcome.provenance["Model"])
        self.state.update({"device": outcome.provenance["Device"], "evaluation": [],
                           "status": f"Segmented with {outcome.provenance['Model']} in {outcome.provenance['Seconds']} s."})

    def _on_progress(self, fraction: float, message: str) -> None:
        with self.state:
            self.state.update({"progress": round(100 * fraction), "status": message or self.state.status})

    def _set_cancel(self, cancel) -> None:
        self._cancel = cancel

    def on_cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self.state.status = "Cancelling..."

    def _show_segmentation(self, node: Any, model: str = "") -> None:
        """The active upload's new segmentation (its earlier one, if any, is replaced)."""
        self._remove(self.segmentation_node)
        self.segmentation_node = node
        self.history.active.segmentation_node, self.history.active.model = node, model
        self.state.history = self.history.items()
        editor = self.slicer.segmentation_editor
        editor.set_active_segmentation(node, self.volume_node)
        editor.set_surface_representation_enabled(False)
        self.state.active_segment = editor.get_active_segment_id()
        self._on_opacity(self.state.opacity)
        self._refresh_segments()

    # -- evaluate ------------------------------------------------------------------------
    def on_reference(self, files: list[dict] | None) -> None:
        """An uploaded reference segmentation (``.seg.nrrd`` or a label map with the card's values)."""
        if not files or self.volume_node is None:
            return
        try:
            upload = ClientFile(files[0])
            path = self.folder.save_upload(upload.name or "", upload.content or b"")
            card = resolve_model(self.state.model)
            node = load_reference(self.slicer.scene, path, f"{self.volume_node.GetName()} reference",
                                  self.volume_node, list(card.labels))
        except MedSegError as exc:
            self._fail(str(exc))
            return
        self._remove(self.reference_node)
        self.reference_node = node
        node.GetDisplayNode().SetVisibility(False)  # compared, not drawn over the prediction
        self.state.update({"reference_name": path.name, "error": "", "status": "Reference loaded."})

    def on_evaluate(self) -> None:
        if self.segmentation_node is not None and self.reference_node is not None:
            self._start(lambda: EvaluationRun(self.slicer.scene, self.segmentation_node, self.reference_node,
                                              volume_node=self.volume_node), "Evaluating...", self._evaluated)

    def _evaluated(self, outcome: EvaluationOutcome) -> None:
        self.report_html = outcome.report_html
        self.state.update({"evaluation": table_rows(outcome), "mean_dice": f"{outcome.mean_foreground_dice:.3f}",
                           "status": "; ".join([f"Mean Dice {outcome.mean_foreground_dice:.3f}.", *outcome.warnings])})

    def on_report(self):
        if not self.report_html:
            return None
        return self.server.protocol.addAttachment(self.report_html.encode("utf-8"))

    # -- review --------------------------------------------------------------------------
    def _refresh_segments(self) -> None:
        if self.segmentation_node is None:
            self.state.segments = []
            return
        segmentation = self.segmentation_node.GetSegmentation()
        display = self.segmentation_node.GetDisplayNode()
        self.state.segments = [
            {"id": entry.segment_id, "name": entry.name, "ml": f"{entry.millilitres:.2f}",
             "color": hex_colour(segmentation.GetSegment(entry.segment_id).GetColor()),
             "visible": bool(display.GetSegmentVisibility(entry.segment_id)) if display else True}
            for entry in segment_volumes(self.segmentation_node)
        ]

    def set_segment_visible(self, segment_id: str, visible: bool) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node is not None else None
        if display is None or self.segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            return
        display.SetSegmentVisibility(segment_id, bool(visible))
        self._refresh_segments()

    def select_segment(self, segment_id: str) -> None:
        """The segment that Paint and Erase change."""
        if self.segmentation_node is not None and self.segmentation_node.GetSegmentation().GetSegment(segment_id):
            self.slicer.segmentation_editor.set_active_segment_id(segment_id)
            self.state.active_segment = segment_id

    def _on_undo_changed(self, *_) -> None:
        with self.state:
            self.state.can_undo = self.undo_stack.can_undo()

    def _on_opacity(self, opacity, **_) -> None:
        display = self.segmentation_node.GetDisplayNode() if self.segmentation_node is not None else None
        if display is not None:
            display.SetOpacity(float(opacity))

    # -- correct -------------------------------------------------------------------------
    def toggle_tool(self, tool: str) -> None:
        """Paint or erase with trame-slicer's brush on the active segment; the same tool again stops it."""
        editor = self.slicer.segmentation_editor
        if self.segmentation_node is None or not tool or tool == self.state.tool:
            editor.deactivate_effect()
            self.state.tool = ""
        else:
            editor.set_active_effect_type(TOOLS[tool])
            self.state.tool = tool
        self._refresh_segments()

    # -- download ------------------------------------------------------------------------
    def on_download(self, fmt: str):
        if self.segmentation_node is None:
            return None
        try:
            path = export_segmentation(self.segmentation_node, self.volume_node, fmt, self.folder)
        except MedSegError as exc:
            self._fail(str(exc))
            return None
        self._refresh_segments()
        return self.server.protocol.addAttachment(path.read_bytes())

    def _fail(self, message: str) -> None:
        logging.error(f"MedSeg web: {message}")
        self.state.update({"error": message, "status": ""})


def serve(host: str = "127.0.0.1", port: int = 8080, open_path: str | None = None,
          upload_limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB) -> None:
    """Start the app (blocking) on ``host:port``; ``open_path`` is loaded first (a server-side file)."""
    app = MedSegWebApp(upload_limit_mb=upload_limit_mb)
    if open_path:
        app.load_volume(Path(open_path))
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        app.server.start(host=host, port=port, open_browser=False, timeout=0)
