"""The hard-negative loss (seed 004): which voxels it counts, and that the recipe switches it on late."""

from __future__ import annotations

import math

import pytest
import torch
from test_training import base_config

from MedSegExtension.errors import InputError
from MedSegExtension.training import LoopOptions, TrainingLoop, build_loss
from MedSegExtension.training.config import config_from_dict
from MedSegExtension.training.hard_negative import LateHardNegative, hard_negative_loss, with_hard_negative

torch.set_num_threads(1)


def two_class_logits(foreground: list[float]) -> torch.Tensor:
    """(1, 2, 1, 1, V) logits whose foreground probability is ``foreground`` voxel by voxel."""
    p = torch.tensor(foreground)
    return torch.stack([torch.log(1 - p), torch.log(p)]).view(1, 2, 1, 1, -1)


def test_the_term_counts_the_positives_and_as_many_highest_scoring_negatives():
    # voxels: two positives (p 0.9, 0.6) and five negatives (p 0.8, 0.1, 0.7, 0.2, 0.05)
    scores = [0.9, 0.6, 0.8, 0.1, 0.7, 0.2, 0.05]
    target = torch.tensor([1, 1, 0, 0, 0, 0, 0]).view(1, 1, 1, -1)
    logits = two_class_logits(scores)
    expected = ((1 - 0.9) + (1 - 0.6) + 0.8 + 0.7) / 4  # the two hardest negatives only
    assert hard_negative_loss(logits, target).item() == pytest.approx(expected, rel=1e-5)
    assert hard_negative_loss(logits, target, kind="mse").item() == pytest.approx(
        (0.1**2 + 0.4**2 + 0.8**2 + 0.7**2) / 4, rel=1e-5)
    # An easy negative may change freely: it is not counted. A hard one is.
    assert hard_negative_loss(two_class_logits([0.9, 0.6, 0.8, 0.3, 0.7, 0.2, 0.05]), target).item() == pytest.approx(
        expected, rel=1e-5)
    assert hard_negative_loss(two_class_logits([0.9, 0.6, 0.4, 0.1, 0.7, 0.2, 0.05]), target).item() < expected
    # Weight 0 takes a voxel out: the 0.8 negative is unlabelled, so 0.7 and 0.2 are the hardest.
    weight = torch.tensor([1.0, 1, 0, 1, 1, 1, 1]).view(1, 1, 1, -1)
    assert hard_negative_loss(logits, target, weight).item() == pytest.approx((0.1 + 0.4 + 0.7 + 0.2) / 4, rel=1e-5)
    # No positive in the patch: the single worst false positive is still punished.
    assert hard_negative_loss(logits, torch.zeros_like(target)).item() == pytest.approx(0.9, rel=1e-5)


def test_per_sample_values_average_to_the_batch_value():
    logits = torch.randn(3, 4, 4, 5, 6)
    target = torch.randint(0, 4, (3, 4, 5, 6))
    per_sample = hard_negative_loss(logits, target, reduction="none")
    assert per_sample.shape == (3,) and torch.allclose(per_sample.mean(), hard_negative_loss(logits, target))


def test_the_loop_switches_the_term_on_at_the_recipes_fraction_of_the_steps():
    base = build_loss("dice_ce")
    loss = with_hard_negative(base, {"start_fraction": 0.5, "weight": 2.0, "kind": "mae"}, steps=6)
    assert isinstance(loss, LateHardNegative) and loss.start_step == 3
    image = torch.randn(2, 1, 8, 8, 8)
    target = (image[:, 0] > 0).long()
    network = torch.nn.Conv3d(1, 2, 3, padding=1)
    seen: list[tuple[int, float, float]] = []

    def on_step(step: int, value: float) -> None:
        with torch.no_grad():
            outputs = network(image)
            seen.append((step, value, float(base(outputs, target)) + 2.0 * float(hard_negative_loss(outputs, target))))

    def batches(start):
        while True:
            yield {"image": image, "target": target}

    # lr 0: the weights stay put, so the loss of each step can be recomputed after it
    TrainingLoop(network, loss, batches, LoopOptions(steps=6, lr=0.0, schedule="constant", val_every=100),
                 on_step=on_step).run()
    with torch.no_grad():
        plain = float(base(network(image), target))
    for step, value, with_term in seen:
        assert value == pytest.approx(with_term if step > 3 else plain, rel=1e-5), step
    assert not math.isclose(plain, seen[-1][2])


def test_medseg_train_with_a_late_hard_negative_term_records_it_in_the_card(tmp_path, monkeypatch):
    from MedSegExtension.training.trainer import train

    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    raw = base_config(tmp_path, steps=2, hard_negative={"start_fraction": 0.5, "kind": "mse"})
    card = train(config_from_dict({**raw, "output": str(tmp_path / "model")}, tmp_path, "r.yaml"))
    assert card.training["hard_negative"] == {"start_fraction": 0.5, "weight": 1.0, "kind": "mse"}


@pytest.mark.parametrize(("spec", "message"), [
    ({"start_fraction": 1.0}, r"training.hard_negative.start_fraction must be a number in \[0, 1\)"),
    ({"kind": "l1"}, "training.hard_negative.kind must be one of mae, mse"),
    ({"start": 0.5}, "training.hard_negative: unknown key 'start'"),
    ({"weight": 0}, "training.hard_negative.weight must be a positive number"),
])
def test_bad_hard_negative_settings_are_refused_in_one_line(tmp_path, spec, message):
    with pytest.raises(InputError, match=message) as error:
        config_from_dict(base_config(tmp_path, hard_negative=spec), tmp_path, "r.yaml")
    assert str(error.value).startswith("r.yaml: ") and "\n" not in str(error.value)
    config = config_from_dict(base_config(tmp_path, hard_negative={"start_fraction": 0.8}), tmp_path, "r.yaml")
    assert config.training.hard_negative == {"start_fraction": 0.8, "weight": 1.0, "kind": "mae"}
