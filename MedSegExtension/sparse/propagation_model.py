"""The propagation network's folder: its card, its weights, and how both are checked on loading.

The network is a small class-agnostic 3D U-Net (:mod:`MedSegExtension.networks`) with three input
channels — the normalised image, the *known* mask (voxels of the annotated slices) and one
structure's mask on those voxels — and two output classes (background, the structure).

Its folder holds ``propagation.json`` (a :class:`ModelCard`, same fields as ``model.json``) and
the weights. The card has its own file name on purpose: the registry lists every folder with a
``model.json`` as a segmentation model, and this one is not (it segments nothing without slices).
Weights are checked against the card's sha256 and read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import ModelError
from ..io.atomic import atomic_output
from ..models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
from ..models.registry import bundled_models_dir, load_network, sha256_of
from ..networks import UNet3D, build_network

PROPAGATION_FOLDER = "sparse-propagation"  # under Resources/Models
PROPAGATION_CARD = "propagation.json"
PROPAGATION_WEIGHTS = "propagation.pt"
CHANNELS = ("image", "known", "structure on known voxels")
LICENSE = "Weights: Apache-2.0 (MedSeg). Trained on synthetic data only (no third-party data). See Resources/Models/LICENSES.md."
IMAGE_NORMALIZATION = Normalization("percentile", 0.5, 99.5)  # of the region, to [0, 1]


def default_folder() -> Path:
    """``$MEDSEG_PROPAGATION_MODEL``, else the bundled ``Resources/Models/sparse-propagation``."""
    override = os.environ.get("MEDSEG_PROPAGATION_MODEL")
    return Path(override) if override else bundled_models_dir() / PROPAGATION_FOLDER


def propagation_card(channels: tuple[int, ...] = (8, 16, 32, 64), window: int = 64,
                     training: dict | None = None) -> ModelCard:
    """A card for a new propagation network (the weights' sha256 is filled in on saving)."""
    return ModelCard(
        name="sparse-propagation", version="1",
        description="Class-agnostic propagation: image + one structure's annotated slices -> its 3D mask",
        modality="any", input_channels=len(CHANNELS),
        labels=[LabelInfo(1, "structure", (230, 80, 80))],
        target_spacing=(1.0, 1.0, 1.0), window_size=(window, window, window),
        normalization=IMAGE_NORMALIZATION, network=NetworkConfig(channels=tuple(channels)),
        crop_foreground=False, channel_names=list(CHANNELS), weights_file=PROPAGATION_WEIGHTS,
        license=LICENSE, training=dict(training or {}),
    )


def new_network(card: ModelCard) -> UNet3D:
    return build_network(card.input_channels, card.num_classes, card.network)


def save_propagation_model(card: ModelCard, network: torch.nn.Module, folder: str | os.PathLike[str]) -> Path:
    """Write the weights, then the card with their sha256 (each atomically) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card.folder = folder
    state = {k: v.detach().cpu() for k, v in network.state_dict().items()}
    with atomic_output(card.weights_path) as tmp:
        torch.save(state, tmp)
    card.sha256 = sha256_of(card.weights_path)
    return card.save(folder, PROPAGATION_CARD)


def load_propagation_model(folder: str | os.PathLike[str] | None = None,
                           device: str | torch.device = "cpu") -> tuple[UNet3D, ModelCard]:
    """The verified network (eval mode) and its card; one :class:`ModelError` line for any problem."""
    folder = Path(folder) if folder is not None else default_folder()
    card = ModelCard.load(folder, PROPAGATION_CARD)
    if card.input_channels != len(CHANNELS) or card.num_classes != 2:
        raise ModelError(f"{folder / PROPAGATION_CARD}: not a propagation card (needs {len(CHANNELS)} input channels and one label, "
                         f"has {card.input_channels} and {len(card.labels)})")
    return load_network(card, device), card


def bundled_propagation_model(device: str | torch.device = "cpu") -> tuple[UNet3D, ModelCard] | None:
    """The default propagation model, or None when none is installed (no card in its folder).

    A folder that has a card but a broken or planted model still raises: only absence is quiet.
    """
    folder = default_folder()
    if not (folder / PROPAGATION_CARD).is_file():
        return None
    return load_propagation_model(folder, device)
