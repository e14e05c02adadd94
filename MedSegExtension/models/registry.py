"""Where models live, how they are found by name, and how their weights are loaded safely.

Bundled models ship in ``Resources/Models/<name>/`` and are never written by MedSeg except
through the documented retrain command. User models (fine-tuned ones) live in
``$MEDSEG_HOME/models`` (default: the per-user data directory).
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError
from .card import CARD_FILE, ModelCard

if TYPE_CHECKING:  # torch loads only when weights do: listing models stays light (Slicer's GUI process)
    import torch

    from ..networks import UNet3D

DEFAULT_MARKER = "DEFAULT"  # Resources/Models/DEFAULT holds the default model's name


def bundled_models_dir() -> Path:
    """``$MEDSEG_BUNDLED_MODELS``, else ``Resources/Models`` beside the engine package."""
    override = os.environ.get("MEDSEG_BUNDLED_MODELS")
    if override:
        return Path(override)
    package = Path(__file__).resolve().parents[1]
    for candidate in (package.parent / "Resources" / "Models", package / "Resources" / "Models"):
        if candidate.is_dir():
            return candidate
    return package.parent / "Resources" / "Models"


def medseg_home() -> Path:
    """The per-user MedSeg data folder (``$MEDSEG_HOME`` wins)."""
    override = os.environ.get("MEDSEG_HOME")
    if override:
        return Path(override)
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share"))
    return base / "MedSeg"


def user_models_dir() -> Path:
    return medseg_home() / "models"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while block := stream.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class ModelRegistry:
    """Lists bundled and user models and resolves a name or a folder to a card."""

    def __init__(self, bundled: Path | None = None, user: Path | None = None) -> None:
        self.bundled = bundled or bundled_models_dir()
        self.user = user or user_models_dir()

    @staticmethod
    def _cards_in(folder: Path) -> list[ModelCard]:
        if not folder.is_dir():
            return []
        return [ModelCard.load(sub) for sub in sorted(folder.iterdir()) if (sub / CARD_FILE).is_file()]

    def bundled_models(self) -> list[ModelCard]:
        return self._cards_in(self.bundled)

    def user_models(self) -> list[ModelCard]:
        return self._cards_in(self.user)

    def all_models(self) -> list[ModelCard]:
        return self.bundled_models() + self.user_models()

    def default_name(self) -> str:
        marker = self.bundled / DEFAULT_MARKER
        if marker.is_file():
            return marker.read_text(encoding="utf-8").strip()
        bundled = self.bundled_models()
        if len(bundled) == 1:
            return bundled[0].name
        raise ModelError(f"{self.bundled}: no default model (no {DEFAULT_MARKER} file and not exactly one bundled model)")

    def find(self, name_or_folder: str | os.PathLike[str] | None = None) -> ModelCard:
        """A model by name (user models shadow nothing: bundled names win), or by folder path."""
        if name_or_folder is None:
            name_or_folder = self.default_name()
        path = Path(name_or_folder)
        if (path / CARD_FILE).is_file():
            return ModelCard.load(path)
        name = str(name_or_folder)
        for card in self.bundled_models():
            if card.name == name or card.folder is not None and card.folder.name == name:
                return card
        user = self.user_models()
        same_name = [card for card in user if card.name == name]
        if same_name:
            return max(same_name, key=lambda card: _version_key(card.version))  # the newest version
        by_folder = [card for card in user if card.folder is not None and card.folder.name == name]
        if by_folder:
            return by_folder[0]  # one version by its folder, e.g. "liver-v2"
        known = ", ".join(sorted({c.name for c in self.all_models()})) or "none installed"
        raise ModelError(f"unknown model {name!r} (known models: {known})")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def check_model_name(name: str) -> str:
    """A model name usable as a folder name on every platform."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ModelError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, no spaces)")
    return name


def next_user_model_folder(name: str, registry: ModelRegistry | None = None) -> tuple[Path, int]:
    """The folder and version number for a new version of user model ``name``: name, name-v2, name-v3…

    Never an existing folder, and never a bundled model's name: user models do not shadow them.
    """
    registry = registry or ModelRegistry()
    check_model_name(name)
    if any(card.name == name for card in registry.bundled_models()):
        raise ModelError(f"model name {name!r} is taken by a bundled model; choose another name")
    version = 1
    while True:
        folder = registry.user / (name if version == 1 else f"{name}-v{version}")
        if not folder.exists():
            return folder, version
        version += 1


def verify_weights(card: ModelCard) -> Path:
    """The weights path, after checking it exists and matches the card's sha256."""
    path = card.weights_path
    if not path.is_file():
        raise ModelError(f"{path}: weights file of model {card.name!r} is missing")
    if not card.sha256:
        raise ModelError(f"{card.folder}/{CARD_FILE}: model {card.name!r} has no sha256 for its weights")
    actual = sha256_of(path)
    if actual != card.sha256:
        raise ModelError(
            f"{path}: weights sha256 mismatch for model {card.name!r} "
            f"(card says {card.sha256[:12]}…, file is {actual[:12]}…); the file is corrupt or was replaced"
        )
    return path


def load_network(card: ModelCard, device: str | torch.device = "cpu") -> UNet3D:
    """Build the card's network, load its verified weights, and put it in eval mode on ``device``."""
    import torch

    from ..networks import build_network

    path = verify_weights(card)
    network = build_network(card.input_channels, card.num_classes, card.network)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        network.load_state_dict(state)
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelError(f"{path}: cannot load weights for model {card.name!r} ({type(exc).__name__}: {exc})") from None
    return network.to(device).eval()


def save_model(card: ModelCard, network: torch.nn.Module, folder: str | os.PathLike[str]) -> ModelCard:
    """Write weights and card into ``folder`` (atomically, weights first), filling in the sha256."""
    import torch

    from ..io.atomic import atomic_output

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / card.weights_file
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_output(weights) as tmp:
        torch.save(state, tmp)
    card.sha256 = sha256_of(weights)
    card.folder = folder
    card.save(folder)
    return card
