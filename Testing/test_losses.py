"""Losses with per-voxel weights: masking is exact, values match references, and they learn."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss as MonaiDiceLoss
from monai.losses import FocalLoss as MonaiFocalLoss

from MedSegExtension.errors import InputError
from MedSegExtension.training.losses import (
    LOSS_NAMES,
    CrossEntropyLoss,
    DeepSupervisionLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    build_loss,
)

torch.set_num_threads(1)
C = 4  # background + 3 labels


def _problem(seed: int = 0, shape=(2, 6, 7, 5)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn((shape[0], C, *shape[1:]), generator=g)
    target = torch.randint(0, C, shape, generator=g)
    weight = (torch.rand(shape, generator=g) > 0.4).float() * torch.rand(shape, generator=g).add(0.5)
    return logits, target, weight


def _value_and_grad(loss, logits, target, weight):
    logits = logits.clone().requires_grad_(True)
    value = loss(logits, target, weight)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_unlabelled_voxels_contribute_nothing(name):
    """Changing targets where weight == 0 (even to invalid values) leaves loss and gradient bit-identical."""
    loss = build_loss(name)
    logits, target, weight = _problem()
    value_a, grad_a = _value_and_grad(loss, logits, target, weight)
    changed = target.clone()
    masked = weight == 0
    changed[masked] = torch.randint(0, C, (int(masked.sum()),))
    changed[masked & (torch.arange(changed.numel()).reshape(changed.shape) % 3 == 0)] = 255  # "unlabelled" code
    value_b, grad_b = _value_and_grad(loss, logits, changed, weight)
    assert torch.isfinite(value_a)
    assert torch.equal(value_a, value_b)
    assert torch.equal(grad_a, grad_b)
    # Masked voxels get exactly zero gradient; labelled ones do not.
    assert torch.count_nonzero(grad_a.permute(1, 0, 2, 3, 4)[:, masked]) == 0
    assert torch.count_nonzero(grad_a.permute(1, 0, 2, 3, 4)[:, ~masked]) > 0
    # And the logits there do not matter either.
    moved = logits.clone()
    moved.permute(1, 0, 2, 3, 4)[:, masked] = 50.0
    value_c, _ = _value_and_grad(loss, moved, target, weight)
    assert torch.allclose(value_a, value_c, atol=1e-6)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_all_zero_weight_is_zero_loss_without_nan(name):
    logits, target, _ = _problem(1)
    value, grad = _value_and_grad(build_loss(name), logits, target, torch.zeros(target.shape))
    assert torch.isfinite(value) and torch.count_nonzero(grad) == 0
    if name in ("ce", "focal"):
        assert value == 0


def test_cross_entropy_matches_torch_and_weights_scale():
    logits, target, _ = _problem(2)
    ce = CrossEntropyLoss()
    assert torch.allclose(ce(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    # A weight of 3 on half the voxels equals duplicating them three times.
    weight = torch.ones(target.shape)
    weight[:, :3] = 3.0
    per_voxel = F.cross_entropy(logits, target, reduction="none")
    expected = (per_voxel * weight).sum() / weight.sum()
    assert torch.allclose(ce(logits, target, weight), expected, atol=1e-6)
    class_weighted = CrossEntropyLoss(class_weights=[0.5, 1, 2, 1])
    assert torch.allclose(class_weighted(logits, target),
                          F.cross_entropy(logits, target, weight=torch.tensor([0.5, 1, 2, 1])), atol=1e-6)


def test_dice_matches_monai_and_vnet_form():
    logits, target, _ = _problem(3)
    ours = DiceLoss(smooth=1e-5)(logits, target)
    monai = MonaiDiceLoss(include_background=False, to_onehot_y=True, softmax=True, batch=True,
                          smooth_nr=1e-5, smooth_dr=1e-5)(logits, target[:, None])
    assert torch.allclose(ours, monai, atol=1e-6)
    # V-Net (seed 004): 1 - (2Σŷy + 1) / (Σŷ² + Σy² + 1), here for a two-class problem.
    two = logits[:, :2]
    binary = (target > 0).long()
    p = two.softmax(1)[:, 1]
    y = binary.float()
    expected = 1 - (2 * (p * y).sum() + 1) / ((p * p).sum() + (y * y).sum() + 1)
    assert torch.allclose(build_loss("vnet_dice")(two, binary), expected, atol=1e-6)


def test_focal_matches_monai_and_reduces_to_cross_entropy():
    logits, target, _ = _problem(4)
    ours = FocalLoss(alpha=0.75, gamma=2.0)(logits, target)
    monai = MonaiFocalLoss(to_onehot_y=True, use_softmax=True, gamma=2.0, alpha=0.75)(logits, target[:, None])
    assert torch.allclose(ours, monai * C, atol=1e-6)  # MONAI also averages over channels
    assert torch.allclose(FocalLoss(alpha=None, gamma=0.0)(logits, target), F.cross_entropy(logits, target), atol=1e-6)
    # γ > 0 down-weights easy voxels: a confident correct prediction costs far less than under CE.
    easy = F.one_hot(target, C).movedim(-1, 1).float() * 4.0
    assert FocalLoss(alpha=None, gamma=2.0)(easy, target) < 0.01 * F.cross_entropy(easy, target)


def test_tversky_alpha_penalizes_false_positives_and_equals_dice_at_half():
    logits, target, _ = _problem(5)
    assert torch.allclose(TverskyLoss(0.5, 0.5)(logits, target), DiceLoss()(logits, target), atol=1e-6)
    # A prediction with false positives only (everything predicted as label 1).
    target = torch.zeros((1, 8, 8, 8), dtype=torch.long)
    target[:, :4] = 1
    logits = torch.full((1, 2, 8, 8, 8), -5.0)
    logits[:, 1] = 5.0
    fp_heavy, fn_heavy = TverskyLoss(alpha=0.85, beta=0.15), TverskyLoss(alpha=0.15, beta=0.85)
    assert fp_heavy(logits, target) > 3 * fn_heavy(logits, target)


def test_deep_supervision_weights():
    logits, target, weight = _problem(6)
    base = CrossEntropyLoss()
    aux = logits.flip(0)
    combined = DeepSupervisionLoss(base)([logits, aux], target, weight)
    expected = (1.0 * base(logits, target, weight) + 0.5 * base(aux, target, weight)) / 1.5
    assert torch.allclose(combined, expected, atol=1e-6)
    assert torch.allclose(DeepSupervisionLoss(base)(logits, target, weight), base(logits, target, weight))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_learns_the_labelled_voxels(name):
    """Minimizing the loss over free logits reproduces the target wherever the weight is positive."""
    torch.manual_seed(0)
    _, target, weight = _problem(7, shape=(1, 6, 6, 6))
    logits = torch.zeros((1, C, 6, 6, 6), requires_grad=True)
    loss = build_loss(name)
    optimizer = torch.optim.Adam([logits], lr=0.2)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        value = loss(logits, target, weight)
        first = float(value.detach()) if first is None else first
        value.backward()
        optimizer.step()
    assert float(loss(logits, target, weight).detach()) < first
    labelled = weight > 0
    assert torch.equal(logits.argmax(1)[labelled], target[labelled])


def test_bad_loss_configs_are_input_errors():
    with pytest.raises(InputError, match="unknown loss 'dcie'"):
        build_loss("dcie")
    with pytest.raises(InputError, match="does not take gama"):
        build_loss({"name": "focal", "gama": 2})
    loss = build_loss({"name": "tversky", "alpha": 0.85, "beta": 0.15})
    assert loss.loss.alpha == 0.85 and loss.loss.beta == 0.15
