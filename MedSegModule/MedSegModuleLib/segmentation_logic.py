"""One segmentation run: input node -> engine subprocess -> a NEW segmentation node.

The voxels go to the engine through a temporary NRRD written from the node (geometry in
LPS, see :mod:`.volume_conversion`); the engine runs as ``python -m MedSegExtension predict
... --progress json`` in a :class:`~.background_task.BackgroundTask`. Only a successful run
changes the scene, and then only by adding nodes: the segmentation (named after the input and
the model, the card's segment names, colours and terminology, beside the input in the subject
hierarchy, provenance in node attributes) and, if asked, the uncertainty map. A failure or a
cancel removes the temporary files and leaves the scene as it was.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from MedSegExtension.errors import CancelledError, InputError, MedSegError  # noqa: F401 (the panel uses them from here)
from MedSegExtension.models.card import ModelCard

from .background_task import BackgroundTask, TaskEvent
from .engine_run import EngineRun
from .model_catalog import resolve_model
from .scene_guard import nodes_removed_on_error
from .segmentation_nodes import import_segmentation_file, place_beside
from .volume_conversion import check_scalar_volume, sitk_to_volume_node, volume_node_to_sitk

ATTRIBUTE_PREFIX = "MedSeg."
_DEVICE_PATTERN = re.compile(r"\bon (cuda(?::\d+)?|mps|cpu)\b")


@dataclass(frozen=True)
class SegmentationSettings:
    """What the user chose in the panel. ``device`` is an engine device: auto, cpu, cuda, mps."""

    model: str
    device: str = "auto"
    tta: bool = False  # "accurate": test-time augmentation
    uncertainty: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "tta": self.tta, "uncertainty": self.uncertainty}


@dataclass
class SegmentationOutcome:
    segmentation_node: Any
    uncertainty_node: Any | None
    provenance: dict[str, str]
    log: list[str] = field(default_factory=list)


class SegmentationRun(EngineRun):
    """Validate now (clear errors, nothing created), :meth:`start`, :meth:`poll`, :meth:`finish`."""

    what = "segmentation"
    failed_what = "segmentation engine"

    def __init__(self, scene: Any, volume_node: Any, settings: SegmentationSettings, python: str | None = None) -> None:
        check_scalar_volume(volume_node)
        if volume_node.GetScene() is not scene:
            raise InputError(f"{volume_node.GetName()}: input volume is not in this scene")
        self.scene = scene
        self.volume_node = volume_node
        self.settings = settings
        self.card: ModelCard = resolve_model(settings.model)
        super().__init__(python)

    # -- running ---------------------------------------------------------------------------
    @property
    def output_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "result.seg.nrrd"

    @property
    def uncertainty_path(self) -> Path:
        assert self.workdir is not None
        return self.workdir / "uncertainty.nrrd"

    def write_inputs(self, workdir: Path) -> list[str]:
        """Write the input volume to ``workdir``; the ``predict`` arguments."""
        from MedSegExtension.io.volumes import write_image

        # uncompressed: writing is then disk-bound (no seconds of gzip on Slicer's main thread)
        input_path = write_image(volume_node_to_sitk(self.volume_node), workdir / "input.nrrd", compress=False)
        args = [
            "predict", str(input_path),
            "-o", str(self.output_path),
            "--model", str(self.card.folder),
            "--device", self.settings.device,
            "--progress", "json",
        ]
        if self.settings.tta:
            args.append("--tta")
        if self.settings.uncertainty:
            args += ["--uncertainty", str(self.uncertainty_path)]
        return args

    # -- outcome ---------------------------------------------------------------------------
    def collect(self, task: BackgroundTask) -> SegmentationOutcome:
        if not self.scene.IsNodePresent(self.volume_node):
            raise InputError(f"{self.volume_node.GetName()}: the input volume was removed during segmentation")
        provenance = self.provenance(task)
        base_name = f"{self.volume_node.GetName()} {self.card.name}"
        with nodes_removed_on_error(self.scene):
            segmentation = import_segmentation_file(
                self.scene, self.output_path, base_name, self.card.labels, reference_volume=self.volume_node
            )
            place_beside(segmentation, self.volume_node)
            for key, value in provenance.items():
                segmentation.SetAttribute(ATTRIBUTE_PREFIX + key, value)
            uncertainty = None
            if self.settings.uncertainty:
                uncertainty = self._load_uncertainty(f"{base_name} uncertainty", provenance)
        return SegmentationOutcome(segmentation, uncertainty, provenance, list(task.lines))

    def provenance(self, task: BackgroundTask) -> dict[str, str]:
        from MedSegExtension import __version__

        device = self.settings.device
        for line in reversed(task.lines):
            match = _DEVICE_PATTERN.search(line)
            if match:
                device = match.group(1)
                break
        return {
            "Model": self.card.name,
            "ModelVersion": self.card.version,
            "ModelSHA256": self.card.sha256,
            "ModelFolder": str(self.card.folder),
            "Device": device,
            "Time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "Seconds": f"{time.monotonic() - self.started_at:.1f}",
            "Settings": json.dumps(self.settings.as_dict(), sort_keys=True),
            "InputVolume": self.volume_node.GetName(),
            "EngineVersion": __version__,
        }

    def _load_uncertainty(self, name: str, provenance: dict[str, str]) -> Any:
        from MedSegExtension.io.volumes import read_image

        node = sitk_to_volume_node(self.scene, read_image(self.uncertainty_path), name)
        place_beside(node, self.volume_node)
        for key in ("Model", "ModelVersion", "Time"):
            node.SetAttribute(ATTRIBUTE_PREFIX + key, provenance[key])
        display = node.GetDisplayNode()
        if display is not None:
            display.SetAutoWindowLevel(False)
            display.SetWindowLevelMinMax(0.0, 1.0)
            color_id = "vtkMRMLColorTableNodeRainbow"
            if self.scene.GetNodeByID(color_id) is not None:
                display.SetAndObserveColorNodeID(color_id)
        return node


def run_segmentation(
    scene: Any,
    volume_node: Any,
    settings: SegmentationSettings,
    on_event: Callable[[TaskEvent], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> SegmentationOutcome:
    """Blocking convenience for scripts and tests: start, follow, finish."""
    run = SegmentationRun(scene, volume_node, settings)
    run.start()
    try:
        while not run.done:
            for event in run.poll():
                if on_event is not None:
                    on_event(event)
            if should_cancel is not None and should_cancel():
                run.cancel()
            time.sleep(interval)
        for event in run.poll():
            if on_event is not None:
                on_event(event)
    except BaseException:
        run.abort()
        raise
    return run.finish()
