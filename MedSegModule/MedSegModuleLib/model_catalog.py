"""Models and compute devices as the panel lists them (bundled, user, and extra folders)."""

from __future__ import annotations

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


def resolve_model(name_or_folder: str) -> ModelCard:
    """A model card by folder or name, with its weights checked against the card's sha256."""
    from MedSegExtension.models.registry import ModelRegistry, verify_weights

    if not name_or_folder:
        raise ModelError("no model selected")
    card = ModelRegistry().find(name_or_folder)
    verify_weights(card)
    return card


def describe_devices():
    """The engine's :class:`~MedSegExtension.inference.devices.DeviceReport` (imports torch)."""
    from MedSegExtension.inference.devices import describe_devices as engine_describe

    return engine_describe()


def device_argument(choice: str, report=None) -> str:
    """``medseg --device`` for the panel's choice: auto, gpu (CUDA, else Apple MPS) or cpu."""
    choice = (choice or "auto").lower()
    if choice not in DEVICE_CHOICES:
        raise InputError(f"unknown device choice {choice!r} (use one of {', '.join(DEVICE_CHOICES)})")
    if choice != "gpu":
        return choice
    report = report or describe_devices()
    if report.cuda_available:
        return "cuda"
    if report.mps_available:
        return "mps"
    raise InputError(f"GPU requested but {report.reason}")
