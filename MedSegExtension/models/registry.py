"""Where models live, how they are found by name, and how their weights are loaded safely.

Bundled models ship in ``Resources/Models/<name>/`` and are never written by MedSeg except
through the documented retrain command. User models (fine-tuned ones) live in
``$MEDSEG_HOME/models`` (default: the per-user data directory).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, first_line
from ..io.atomic import is_stale, remove_stale_partials, stale_temporary
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
        self.broken: dict[Path, str] = {}  # model folders whose card could not be read: folder -> one-line problem

    def _cards_in(self, folder: Path) -> list[ModelCard]:
        """The readable cards in ``folder``; a malformed one is skipped and noted in :attr:`broken`.

        Hidden entries (``.tmp-*`` folders of a save in progress) are never models.
        """
        if not folder.is_dir():
            return []
        cards = []
        for sub in sorted(folder.iterdir()):
            if sub.name.startswith(".") or not (sub / CARD_FILE).is_file():
                continue
            try:
                cards.append(ModelCard.load(sub))
            except ModelError as exc:
                self.broken[sub] = str(exc)
        return cards

    def bundled_models(self) -> list[ModelCard]:
        return self._cards_in(self.bundled)

    def user_models(self) -> list[ModelCard]:
        clean_user_models_dir(self.user)
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
        for folder, problem in self.broken.items():
            if re.fullmatch(re.escape(name) + r"(-v\d+)?", folder.name):
                raise ModelError(f"model {name!r} cannot be used: {problem}")
        known = ", ".join(sorted({c.name for c in self.all_models()})) or "none installed"
        raise ModelError(f"unknown model {name!r} (known models: {known})")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


def check_model_name(name: str) -> str:
    """A model name usable as a folder name on every platform."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise ModelError(f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, no spaces)")
    return name


def check_user_model_name(name: str, registry: ModelRegistry | None = None) -> str:
    """A valid name for a new user model: a usable folder name, not a bundled model's name."""
    registry = registry or ModelRegistry()
    check_model_name(name)
    if any(card.name == name or card.folder is not None and card.folder.name == name
           for card in registry.bundled_models()):
        raise ModelError(f"model name {name!r} is taken by a bundled model; choose another name")
    return name


def _version_folder(registry: ModelRegistry, name: str, version: int) -> Path:
    return registry.user / (name if version == 1 else f"{name}-v{version}")


def next_user_model_folder(name: str, registry: ModelRegistry | None = None) -> tuple[Path, int]:
    """The folder and version number a new version of user model ``name`` would get now: name, name-v2…

    Only a guess under concurrency: :func:`create_user_model` is what claims a version.
    """
    registry = registry or ModelRegistry()
    check_user_model_name(name, registry)
    version = 1
    while _version_folder(registry, name, version).exists():
        version += 1
    return _version_folder(registry, name, version), version


TEMP_PREFIX = ".tmp-"  # hidden folders in the user models dir: a save in progress, named .tmp-<pid>-<name>-<random>


def _temporary_folder(parent: Path, name: str) -> Path:
    import tempfile

    parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{name}-", dir=parent))


def _rename_if_absent(source: Path, target: Path) -> bool:
    """Rename folder ``source`` to ``target`` unless ``target`` exists; False when it does (or appeared)."""
    if target.exists() or target.is_symlink():
        return False
    try:
        os.rename(source, target)  # atomic; fails on a non-empty target (POSIX) or any target (Windows)
    except FileExistsError:
        return False
    except OSError as exc:
        import errno

        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def create_user_model(name: str, write: Callable[[Path, int], None], registry: ModelRegistry | None = None) -> Path:
    """Claim the next free version of user model ``name`` and fill it with ``write(folder, version)``.

    ``write`` fills a hidden temporary folder in the user models dir; only the complete folder is
    renamed into place (name, name-v2, name-v3…), with an exclusive rename: two processes saving
    the same name at once get two versions, and a crash or cancel leaves only a hidden
    ``.tmp-*`` folder that the next registry scan removes. ``write`` is called again, with the
    next version, when another process took the version first. Never replaces a folder.
    """
    registry = registry or ModelRegistry()
    check_user_model_name(name, registry)
    clean_user_models_dir(registry.user)
    tmp = _temporary_folder(registry.user, name)
    try:
        version = next_user_model_folder(name, registry)[1]
        while True:
            write(tmp, version)
            folder = _version_folder(registry, name, version)
            if _rename_if_absent(tmp, folder):
                return folder
            version += 1
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def clean_user_models_dir(folder: Path) -> None:
    """Remove what a killed save left in the user models dir: stale ``.tmp-*`` folders, partial
    files, and empty version folders that earlier MedSeg versions created before writing."""
    if not folder.is_dir():
        return
    import shutil

    for entry in folder.iterdir():
        if entry.name.startswith(TEMP_PREFIX) and entry.is_dir() and stale_temporary(entry, TEMP_PREFIX):
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_dir() and not entry.name.startswith("."):
            remove_stale_partials(entry)
            if not any(entry.iterdir()) and is_stale(entry, None):  # empty, and older than a day
                entry.rmdir()


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
    try:
        network = build_network(card.input_channels, card.num_classes, card.network, card.channel_swap_for_lr_flip())
    except ValueError as exc:
        raise ModelError(f"{card.folder}: model {card.name!r}: {exc}") from None
    try:
        with warnings.catch_warnings():  # e.g. torch's note on a pickle protocol: the error line says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        network.load_state_dict(state)
    except pickle.UnpicklingError:  # torch's text ends by advising to switch weights_only off: never show it
        raise ModelError(f"{path}: refused: the weights file holds Python objects, not only tensors "
                         f"(MedSeg never runs code from a file)") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise ModelError(f"{path}: cannot load weights for model {card.name!r} "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    return network.to(device).eval()


def _write_model(card: ModelCard, network: torch.nn.Module, folder: Path) -> None:
    """Weights, then the card with their sha256 (each file atomically): a folder without a card is no model."""
    import torch

    from ..io.atomic import atomic_output

    card.folder = folder
    weights = card.weights_path
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_output(weights) as tmp:
        torch.save(state, tmp)
    card.sha256 = sha256_of(weights)
    card.save(folder)


def save_model(card: ModelCard, network: torch.nn.Module, folder: str | os.PathLike[str]) -> ModelCard:
    """Write weights and card into ``folder``, filling in the sha256.

    A new folder is built hidden beside it and renamed into place when complete (refused if the
    folder appeared meanwhile). An existing folder is training's own (its checkpoints live there;
    ``medseg train`` decides before the run whether its model may be replaced) and gets its
    files atomically, the card last. New user model versions: :func:`save_user_model`.
    """
    folder = Path(folder)
    if folder.is_dir():
        _write_model(card, network, folder)
        return card
    tmp = _temporary_folder(folder.parent, folder.name)
    try:
        _write_model(card, network, tmp)
        if not _rename_if_absent(tmp, folder):
            raise ModelError(f"{folder}: appeared while the model was being written; refusing to replace it")
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    card.folder = folder
    return card


def save_user_model(card: ModelCard, network: torch.nn.Module, name: str,
                    registry: ModelRegistry | None = None) -> ModelCard:
    """Save as a new version of user model ``name`` (name, name-v2…), safe against concurrent savers."""

    def write(folder: Path, version: int) -> None:
        card.name, card.version = name, str(version)
        _write_model(card, network, folder)

    card.folder = create_user_model(name, write, registry)
    return card
