"""Models and compute devices as the panel lists them (bundled, user, and extra folders)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from MedSegExtension.errors import InputError, ModelError
from MedSegExtension.models.card import CARD_FILE, ModelCard

DEVICE_CHOICES = ("auto", "gpu", "cpu")


@dataclass(frozen=True)
class ModelChoice:
    card: ModelCard
    source: str  # "bundled", "user" or "folder"

    @property
    def key(self) -> str:
        """What the parameter node stores and ``medseg --model`` takes: the model folder."""
        return str(self.card.folder)

    @property
    def label(self) -> str:
        return f"{self.card.name} {self.card.version} ({self.source})"

    def summary(self) -> str:
        classes = ", ".join(label.name for label in self.card.labels)
        modality = self.card.modality if self.card.modality != "any" else "CT or MR"
        return f"{self.card.description}\nModality: {modality}. Classes ({len(self.card.labels)}): {classes}."


@dataclass
class Catalog:
    models: list[ModelChoice] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line per model folder that could not be read

    def find(self, key: str) -> ModelChoice | None:
        for choice in self.models:
            if key in (choice.key, choice.card.name):
                return choice
        return None


def _scan(folder: Path, source: str, catalog: Catalog) -> None:
    if not folder.is_dir():
        return
    for sub in sorted(folder.iterdir()):
        if (sub / CARD_FILE).is_file():
            try:
                catalog.models.append(ModelChoice(ModelCard.load(sub), source))
            except ModelError as exc:
                catalog.problems.append(str(exc))


def list_models(extra_folders: Iterable[str | os.PathLike[str]] = (), bundled: Path | None = None, user: Path | None = None) -> Catalog:
    """Every readable model: bundled first, then the user's, then folders added in the panel."""
    from MedSegExtension.models.registry import bundled_models_dir, user_models_dir

    catalog = Catalog()
    _scan(bundled or bundled_models_dir(), "bundled", catalog)
    _scan(user or user_models_dir(), "user", catalog)
    for folder in extra_folders:
        folder = Path(folder)
        if catalog.find(str(folder)) is not None:
            continue
        try:
            catalog.models.append(ModelChoice(ModelCard.load(folder), "folder"))
        except ModelError as exc:
            catalog.problems.append(str(exc))
    return catalog


def folder_problem(folder: str | os.PathLike[str]) -> str:
    """Why ``folder`` is not a usable model folder ("" when it is): one line naming the file."""
    try:
        ModelCard.load(Path(folder))
    except ModelError as exc:
        return str(exc)
    return ""


def resolve_model(name_or_folder: str) -> ModelCard:
    """A model card by folder or name, with its weights checked against the card's sha256."""
    from MedSegExtension.models.registry import ModelRegistry, verify_weights

    if not name_or_folder:
        raise ModelError("no model selected")
    card = ModelRegistry().find(name_or_folder)
    verify_weights(card)
    return card


@dataclass(frozen=True)
class DeviceInfo:
    """What the engine's torch can use, as the engine reported it (the fields of its ``DeviceReport``)."""

    cuda_available: bool
    cuda_name: str | None
    mps_available: bool
    reason: str


# Run by the engine's Python, never in Slicer's own process: importing torch there would freeze the
# panel for seconds, initialise CUDA (GPU memory held) and lock torch's DLLs on Windows.
DEVICE_QUERY = ("import dataclasses, json\n"
                "from MedSegExtension.inference.devices import describe_devices\n"
                "print(json.dumps(dataclasses.asdict(describe_devices())))")


def start_device_query(python: str | None = None):
    """Ask the engine's Python (a subprocess) which devices it can use; returns the running
    :class:`~.background_task.BackgroundTask` (read it with :func:`device_query_result`)."""
    from .background_task import BackgroundTask, python_executable
    from .engine_run import engine_environment

    task = BackgroundTask([python or python_executable(), "-c", DEVICE_QUERY], env=engine_environment())
    task.start()
    return task


_known: list[DeviceInfo] = []  # the latest answer, so that a GPU choice needs no second query


def device_query_result(task) -> DeviceInfo:
    """The answer of a finished :func:`start_device_query`; an engine that failed is one line."""
    for line in reversed(task.lines):
        if line.startswith("{"):
            try:
                info = DeviceInfo(**json.loads(line))
            except (TypeError, ValueError):
                break
            _known[:] = [info]
            return info
    raise ModelError(f"the engine could not list compute devices: {task.error_message()}")


def describe_devices(timeout: float = 120.0) -> DeviceInfo:
    """Blocking device query (scripts, and a GPU choice made before the panel's query answered)."""
    task = start_device_query()
    if task.wait(timeout=timeout) is None:
        task.stop()
        raise ModelError(f"the engine did not list compute devices within {timeout:.0f} s")
    return device_query_result(task)


def device_argument(choice: str, report=None) -> str:
    """``medseg --device`` for the panel's choice: auto, gpu (CUDA, else Apple MPS) or cpu."""
    choice = (choice or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise InputError(f"unknown device choice {choice!r} (use one of {', '.join(DEVICE_CHOICES)})")
    if choice != "gpu":
        return choice
    report = report or (_known[0] if _known else describe_devices())
    if report.cuda_available:
        return "cuda"
    if report.mps_available:
        return "mps"
    raise InputError(f"GPU requested but {report.reason}")
