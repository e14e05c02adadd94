"""Shared fixtures: small real volumes and a small real (randomly initialised) model."""

from __future__ import annotations

import os
import sys
import unittest
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from MedSegExtension.models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
from MedSegExtension.models.registry import save_model
from MedSegExtension.networks import build_network

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# slicer-core's vtkITK filters with ITK's default TBB threader crash Python at exit; "Platform" does not.
# (Never "TBB": SimpleITK has no TBB and then fails every operation.)
os.environ.setdefault("ITK_GLOBAL_DEFAULT_THREADER", "Platform")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "MedSegModule"))  # for test_slicer_*.py: what Slicer does for an additional module path


def make_phantom(size=(40, 36, 32), spacing=(1.2, 1.0, 1.5), origin=(-20.0, 10.0, 5.0), direction=None, seed=0) -> sitk.Image:
    """A float32 head-like phantom: an ellipsoid with two blobs (left and right) and noise."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in size[::-1]), indexing="ij")
    array = 100.0 * ((i**2 + j**2 + k**2) < 0.8) + rng.normal(0, 5, size[::-1])
    array += 200.0 * (((i - 0.35) ** 2 + j**2 + k**2) < 0.05)
    array += 300.0 * (((i + 0.35) ** 2 + j**2 + k**2) < 0.05)
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def make_tiny_card(name: str = "tiny-test") -> ModelCard:
    return ModelCard(
        name=name,
        version="0.0.1",
        description="Random weights, for tests only.",
        modality="any",
        input_channels=1,
        labels=[
            LabelInfo(1, "Left blob", (230, 80, 80)),
            LabelInfo(2, "Right blob", (80, 80, 230)),
            LabelInfo(3, "Body", (80, 200, 80)),
        ],
        target_spacing=(2.0, 2.0, 2.0),
        window_size=(16, 16, 16),
        normalization=Normalization("percentile", 0.5, 99.5),
        network=NetworkConfig(channels=(4, 8)),
        left_right_pairs=[(1, 2)],
        license="CC0-1.0",
        training={"note": "random initialisation"},
    )


@pytest.fixture
def phantom() -> sitk.Image:
    return make_phantom()


@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A complete model folder (model.json + model.pt with a valid sha256), random weights."""
    torch.manual_seed(0)
    card = make_tiny_card()
    network = build_network(card.input_channels, card.num_classes, card.network)
    folder = tmp_path / "models" / card.name
    save_model(card, network, folder)
    return folder


# -- the Slicer module's logic on slicer-core scenes (test_slicer_*.py) -------------------------


@pytest.fixture
def env():
    from MedSegModuleLib.headless import create_scene

    return create_scene()


@pytest.fixture
def tc() -> unittest.TestCase:
    return unittest.TestCase()


@pytest.fixture
def one_thread_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine subprocess inherits the environment: one thread each on this shared 2-core machine
    (several OpenMP threads fighting over busy cores make a 2-step fine-tune take 17 s instead of 6)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
