"""Where training may write: the model folder and the checkpoint folder of a config."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..models.card import CARD_FILE, ModelCard
from .config import TrainConfig


def resolve_output(config: TrainConfig, bundled: bool = False) -> tuple[Path, Path]:
    """(model folder, checkpoint folder), after the rules on where training may write.

    Without ``bundled`` the model goes to ``output`` or the user models dir, never into the
    bundled models dir. With ``bundled`` (the retrain command) it goes to the bundled dir and
    the checkpoints stay in the user's MedSeg folder. An existing model folder is only
    replaced by a model of the same name.
    """
    from ..models.registry import bundled_models_dir, medseg_home, user_models_dir

    name = config.card.name
    bundled_root = bundled_models_dir().resolve()
    if bundled:
        folder = config.output or bundled_root / name
        if folder.resolve().parent != bundled_root:
            raise InputError(f"{config.source}: with --bundled the model goes to {bundled_root / name}; "
                             f"remove 'output' from the config")
        checkpoints = config.checkpoint_dir or medseg_home() / "checkpoints" / name
    else:
        folder = config.output or user_models_dir() / name
        resolved = folder.resolve()
        if resolved == bundled_root or bundled_root in resolved.parents:
            raise InputError(f"{folder}: is inside the bundled models folder {bundled_root}; training writes there "
                             f"only with `medseg train CONFIG --bundled` (the retrain command)")
        if name in _bundled_names(bundled_root):
            raise InputError(f"{config.source}: model name {name!r} belongs to a bundled model; give your model "
                             f"another name (or retrain the bundled one with --bundled)")
        checkpoints = config.checkpoint_dir or folder / "checkpoints"
    if (folder / CARD_FILE).is_file():
        existing = ModelCard.load(folder)
        if existing.name != name:
            raise InputError(f"{folder}: holds model {existing.name!r}; refusing to overwrite it with model "
                             f"{name!r} (choose another output folder or model name)")
    return folder, checkpoints


def _bundled_names(root: Path) -> set[str]:
    from ..errors import ModelError

    names = set()
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if (folder / CARD_FILE).is_file():
            try:
                names.add(ModelCard.load(folder).name)
            except ModelError:
                names.add(folder.name)
    return names
