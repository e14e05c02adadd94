"""Whole-volume passes, window planning, batched TTA and the streaming restore."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import SimpleITK as sitk
import torch
from conftest import make_phantom, make_tiny_card
from torch import nn

from MedSegExtension.inference.pipeline import label_values, labels_from_probabilities
from MedSegExtension.inference.planning import activation_bytes, plan_passes
from MedSegExtension.inference.restore import restore_streaming
from MedSegExtension.inference.sliding_window import (
    WindowSettings,
    probabilities_with_fallback,
    sliding_window_probabilities,
)
from MedSegExtension.networks import build_network
from MedSegExtension.preprocessing import prepare_case, restore_probabilities

CPU = torch.device("cpu")


class Pointwise(nn.Module):
    """Logits from each voxel alone (no context): windows and one pass must agree exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return torch.cat([torch.zeros_like(x), 3 * x, -2 * x], dim=1)


class FailsOnLargeInputs(Pointwise):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[2:].numel() > 16**3:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")
        return super().forward(x)


def _image(shape=(1, 30, 26, 22), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_whole_volume_pass_equals_windows_for_a_context_free_network() -> None:
    image = _image()
    network = Pointwise()
    whole = sliding_window_probabilities(network, image, WindowSettings((16, 16, 16), whole_volume=True, size_divisor=4), CPU)
    assert network.calls == [(1, 1, 32, 28, 24)]  # one call, padded to multiples of 4
    windows = sliding_window_probabilities(network, image, WindowSettings((16, 16, 16)), CPU)
    assert len(network.calls) > 2
    np.testing.assert_allclose(whole, windows, atol=1e-5)
    np.testing.assert_allclose(whole.sum(axis=0), 1.0, atol=1e-5)


def test_windows_match_monais_gaussian_sliding_window() -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    network = build_network(1, 3, make_tiny_card().network).eval()
    image = _image((1, 24, 20, 18))
    ours = sliding_window_probabilities(network, image, WindowSettings((16, 16, 16), overlap=0.5), CPU)
    with torch.inference_mode():
        theirs = sliding_window_inference(torch.from_numpy(image)[None], (16, 16, 16), 1,
                                          lambda x: torch.softmax(network(x), 1), overlap=0.5, mode="gaussian",
                                          sigma_scale=0.125, padding_mode="constant", cval=float(image.min()))
    np.testing.assert_allclose(ours, theirs[0].numpy(), atol=2e-3)


def test_tta_mirrors_go_through_the_network_as_one_batch() -> None:
    network = Pointwise()
    settings = WindowSettings((16, 16, 16), mirror_axes=((2,), (1,), (0,)), whole_volume=True, size_divisor=2)
    sliding_window_probabilities(network, _image(), settings, CPU)
    assert [shape[0] for shape in network.calls] == [4]


def test_whole_volume_out_of_memory_falls_back_to_windows() -> None:
    network, messages = FailsOnLargeInputs(), []
    image = _image()
    result, device = probabilities_with_fallback(
        network, image, WindowSettings((16, 16, 16), whole_volume=True, size_divisor=4), CPU, log=messages.append)
    assert device == CPU and "whole volume in one pass; using windows of 16×16×16" in messages[0]
    np.testing.assert_allclose(result, sliding_window_probabilities(Pointwise(), image, WindowSettings((16, 16, 16)), CPU),
                               atol=1e-6)


def test_plan_keeps_the_card_window_for_instance_norm() -> None:
    card = make_tiny_card()
    assert card.network.norm == "instance"
    base = WindowSettings((16, 16, 16), overlap=0.5)
    settings, line = plan_passes(card, (90, 108, 90), CPU, base, memory=2**40)
    assert settings == base and "instance norm" in line
    settings, _ = plan_passes(card, (14, 16, 9), CPU, base, memory=2**40)  # the crop fits one window anyway
    assert settings.whole_volume
    settings, _ = plan_passes(card, (90, 108, 90), CPU, base, mode="whole", memory=2**40)
    assert settings.whole_volume


def test_plan_uses_one_pass_when_it_fits_and_larger_windows_when_not() -> None:
    card = make_tiny_card()
    card.network = replace(card.network, norm="batch")
    base = WindowSettings((16, 16, 16), overlap=0.5)
    shape = (90, 108, 90)
    whole = activation_bytes(card, (90, 108, 90))
    settings, line = plan_passes(card, shape, CPU, base, memory=4 * whole)
    assert settings.whole_volume and settings.size_divisor == 2 and line.startswith("whole volume")
    settings, line = plan_passes(card, shape, CPU, base, memory=whole // 2)
    assert not settings.whole_volume and settings.window > (16, 16, 16) and settings.overlap < 0.5
    assert activation_bytes(card, settings.window) <= whole // 4
    border = settings.overlap * min(settings.window)
    assert border >= 16 * 0.5 - 1e-6 or settings.overlap == 0.125
    settings, _ = plan_passes(card, shape, CPU, base, mode="windows", memory=4 * whole)
    assert settings == base


def test_streamed_restore_equals_the_whole_grid_restore() -> None:
    direction = np.array(sitk.VersorRigid3DTransform((0.05, 0.1, -0.08, 0.99)).GetMatrix())
    image = make_phantom(size=(37, 30, 21), spacing=(0.9, 1.1, 2.3), direction=tuple(direction))
    card = make_tiny_card()
    case = prepare_case(image, card, crop=True)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(card.num_classes, *case.image.shape[1:])).astype(np.float32) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    old = restore_probabilities(probabilities, case)
    old_labels = labels_from_probabilities(old, card)
    streamed = restore_streaming(probabilities, case, label_values(card), uncertainty=True,
                                 keep_probabilities=True, slab_bytes=1)  # one k-slice per slab
    np.testing.assert_allclose(np.moveaxis(streamed.probabilities, -1, 0), old, atol=1e-5)
    top_two = np.sort(old, axis=0)[-2:]
    ties = (top_two[1] - top_two[0]) < 1e-5
    assert ((streamed.labels == old_labels) | ties).all()
    assert streamed.uncertainty.shape == old_labels.shape and streamed.uncertainty.min() >= 0.0


def test_separable_restore_equals_itk_on_axis_aligned_grids() -> None:
    # Axis-aligned but flipped and permuted relative to the card's LPS frame, anisotropic, off-grid origin.
    image = make_phantom(size=(37, 30, 21), spacing=(0.9, 1.1, 2.3), direction=(0, -1, 0, 1, 0, 0, 0, 0, -1))
    card = make_tiny_card()
    case = prepare_case(image, card, crop=True)
    logits = np.random.default_rng(2).normal(size=(card.num_classes, *case.image.shape[1:])).astype(np.float32) * 3
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    to_labels = label_values(card)
    fast = restore_streaming(probabilities, case, to_labels, keep_probabilities=True, slab_bytes=4000)
    itk = restore_streaming(probabilities, case, to_labels, keep_probabilities=True, separable=False)
    old = restore_probabilities(probabilities, case)
    np.testing.assert_allclose(fast.probabilities, itk.probabilities, atol=1e-5)
    np.testing.assert_allclose(np.moveaxis(fast.probabilities, -1, 0), old, atol=1e-5)
    top_two = np.sort(old, axis=0)[-2:]
    ties = (top_two[1] - top_two[0]) < 1e-5
    assert ((fast.labels == labels_from_probabilities(old, card)) | ties).all()
    labels_only = restore_streaming(probabilities, case, to_labels, slab_bytes=4000)  # interpolates boundary cells only
    assert ((labels_only.labels == labels_from_probabilities(old, card)) | ties).all()
    assert (labels_only.labels != 0).any()
