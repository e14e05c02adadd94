"""Sample-quality weighting (QAM + OCM, seed 002): weights, bounds, per-sample losses, joint training, the recipe."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_cli import write_config
from test_training import base_config

from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError
from MedSegExtension.models.card import ModelCard
from MedSegExtension.training.checkpoints import read_checkpoint
from MedSegExtension.training.config import config_from_dict
from MedSegExtension.training.loop import LoopOptions, TrainingLoop
from MedSegExtension.training.losses import LOSS_NAMES, build_loss
from MedSegExtension.training.sample_quality import SampleQualityWeighting, sample_weights

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tmp_path / "bundled"))


@pytest.mark.parametrize("ocm_lambda", [None, 2.0])
def test_weights_are_positive_and_sum_to_one_per_batch(ocm_lambda):
    torch.manual_seed(0)
    for scores in (torch.randn(5) * 3, torch.tensor([30.0, -30.0, 0.0]), torch.zeros(2)):
        weights = sample_weights(scores, ocm_lambda)
        assert (weights > 0).all() or ocm_lambda is None  # softmax of ±30 unbounded may underflow to 0
        assert torch.allclose((weights / len(scores)).sum(), torch.tensor(1.0))
    # the module on real tensors: an (image ⊕ one-hot label) score per sample, trained from equal weights
    module = SampleQualityWeighting(image_channels=1, num_classes=3, ocm_lambda=ocm_lambda)
    torch.nn.init.normal_(module.network.score.weight)  # leave the equal-weights start
    image, target = torch.randn(4, 1, 8, 8, 8), torch.randint(0, 3, (4, 8, 8, 8))
    weights = module.weights(image, target)
    assert weights.shape == (4,) and (weights > 0).all() and weights.std() > 0
    assert torch.allclose(weights.sum() / 4, torch.tensor(1.0))
    assert torch.allclose(SampleQualityWeighting(1, 3, ocm_lambda).weights(image, target), torch.ones(4))


@pytest.mark.parametrize("ocm_lambda", [0.5, 2.0])
def test_ocm_bounds_the_ratio_of_weights_even_for_extreme_scores(ocm_lambda):
    bound = math.exp(2 * ocm_lambda)
    for scores in (torch.tensor([1e6, -1e6, 0.0, 3.0]), torch.tensor([80.0, -80.0]), torch.randn(16) * 100):
        weights = sample_weights(scores, ocm_lambda)
        assert (weights > 0).all()
        assert weights.max() / weights.min() <= bound * (1 + 1e-5)
    saturated = sample_weights(torch.tensor([1e6, -1e6]), ocm_lambda)
    assert saturated.max() / saturated.min() == pytest.approx(bound, rel=1e-5)  # the bound is tight
    unbounded = sample_weights(torch.tensor([20.0, -20.0]), None)  # QAM alone: no such bound
    assert unbounded.max() / unbounded.min() > 1e6


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_per_sample_losses_are_each_samples_loss_alone_and_the_default_is_unchanged(name):
    torch.manual_seed(1)
    logits = torch.randn(3, 3, 6, 6, 6, requires_grad=True)
    target = torch.randint(0, 3, (3, 6, 6, 6))
    weight = (torch.rand(3, 6, 6, 6) > 0.3).float()
    loss = build_loss(name)
    per_sample = loss(logits, target, weight, reduction="none")
    assert per_sample.shape == (3,)
    for i in range(3):
        alone = loss(logits[i:i + 1], target[i:i + 1], weight[i:i + 1])
        assert torch.allclose(per_sample[i], alone, atol=1e-6)
    per_sample.sum().backward()  # differentiable
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    if name in ("dice", "dice_ce", "tversky"):  # batch Dice sums over the batch: the default stays that
        assert not torch.allclose(loss(logits, target, weight), per_sample.mean())
    deep = loss([logits, logits * 0.5], target, weight, reduction="none")  # deep supervision passes it on
    assert deep.shape == (3,)
    with pytest.raises(ValueError, match="reduction"):
        loss(logits, target, weight, reduction="sum")


def _sphere_batch(corrupted: int = 3, n: int = 4, size: int = 16) -> dict[str, torch.Tensor]:
    """Bright spheres at different places; sample ``corrupted`` has its label shifted by 5 voxels and dilated."""
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*(np.arange(size),) * 3, indexing="ij"))
    images, labels = [], []
    for index in range(n):
        centre = np.array([8, 8, 8]) + rng.integers(-2, 3, 3)
        mask = ((grid - centre[:, None, None, None]) ** 2).sum(0) < 4.0**2
        label = mask.copy()
        if index == corrupted:
            label = ((grid - (centre + [0, 0, 5])[:, None, None, None]) ** 2).sum(0) < 6.0**2
        images.append(mask * 1.0 + rng.normal(0, 0.1, mask.shape))
        labels.append(label)
    return {"image": torch.tensor(np.stack(images)[:, None], dtype=torch.float32),
            "target": torch.tensor(np.stack(labels), dtype=torch.long)}


def test_joint_training_gives_a_corrupted_label_a_lower_weight_than_every_clean_one():
    # Measured while writing this: for torch seeds 0-3 and the corrupted sample at 0, 2 or 3, the
    # corrupted sample ends at weight 0.024-0.065 and the clean ones at 1.30-1.33 (the OCM floor e^-4).
    torch.manual_seed(0)
    batch = _sphere_batch(corrupted=2)
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.ReLU(),
                                  torch.nn.Conv3d(8, 2, 3, padding=1))
    weighting = SampleQualityWeighting(image_channels=1, num_classes=2, ocm_lambda=2.0, lr=1e-3)
    loop = TrainingLoop(network, build_loss("ce"), lambda start: iter(lambda: batch, None),
                        LoopOptions(steps=30, lr=1e-2, schedule="constant", val_every=10**6, seed=0),
                        sample_weighting=weighting)
    loop.run()
    weights = weighting.last_weights
    assert weights is not None and torch.allclose(weights.sum(), torch.tensor(4.0))
    clean = torch.cat([weights[:2], weights[3:]])
    assert weights[2] < clean.min(), weights
    assert weights[2] < 0.5 * clean.mean(), weights  # clearly, not by a hair
    assert clean.max() / weights[2] <= math.exp(4.0) * (1 + 1e-5)  # and no further than the OCM allows


def test_batch_size_one_and_bad_settings_are_refused_by_the_recipe(tmp_path):
    with pytest.raises(InputError, match="sample weighting needs batch_size ≥ 2") as error:
        config_from_dict(base_config(tmp_path, batch_size=1, sample_weighting="qam"), tmp_path, "r.yaml")
    assert "\n" not in str(error.value) and str(error.value).startswith("r.yaml: training.sample_weighting")
    with pytest.raises(InputError, match="sample_weighting must be one of none, qam, qam_ocm"):
        config_from_dict(base_config(tmp_path, sample_weighting="qma"), tmp_path, "r.yaml")
    with pytest.raises(InputError, match="training.ocm_lambda must be a positive number"):
        config_from_dict(base_config(tmp_path, sample_weighting="qam_ocm", ocm_lambda=0), tmp_path, "r.yaml")
    config = config_from_dict(base_config(tmp_path, batch_size=1), tmp_path, "r.yaml")  # off: batch 1 is fine
    assert config.training.sample_weighting == "none"


def test_medseg_train_with_qam_ocm_completes_and_resumes(tmp_path, capsys):
    config = write_config(tmp_path, batch_size=2, sample_weighting="qam_ocm", ocm_lambda=2.0)
    assert main(["train", str(config), "--progress", "none"]) == 0
    folder = tmp_path / "out" / "cli-toy"
    training = ModelCard.load(folder).training
    assert training["sample_weighting"] == "qam_ocm" and training["ocm_lambda"] == 2.0
    last = read_checkpoint(folder / "checkpoints" / "last.pt")
    assert "network.score.weight" in last["sample_weighting"]  # the QAM resumes with its training
    assert main(["train", str(config), "--resume", "--steps", "5", "--progress", "none"]) == 0
    assert ModelCard.load(folder).training["steps"] == 5
    assert not any(key.startswith("network.score") for key in last["model"])  # the model is the U-Net alone


@pytest.mark.slow  # ~45 s, like test_training's DDP test: two spawned processes; the QAM is DDP-wrapped too
def test_two_process_training_with_qam_ocm(tmp_path):
    from MedSegExtension.training.launch import launch_local

    config = base_config(tmp_path, steps=2, val_every=2, augmentation={"enabled": False}, sample_weighting="qam_ocm")
    card, finished = launch_local(config, nprocs=2)
    assert finished == [0, 1] and card["training"]["processes"] == 2
    assert card["training"]["sample_weighting"] == "qam_ocm" and card["training"]["steps"] == 2
