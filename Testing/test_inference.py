"""Sliding-window inference, TTA, cancel, out-of-memory fallback and the full pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_phantom, make_tiny_card
from torch import nn

from MedSegExtension.errors import CancelledError
from MedSegExtension.inference.pipeline import InferenceOptions, segment
from MedSegExtension.inference.sliding_window import (
    WindowSettings,
    count_windows,
    probabilities_with_fallback,
    sliding_window_probabilities,
)
from MedSegExtension.io.volumes import same_geometry
from MedSegExtension.models.card import ModelCard
from MedSegExtension.models.registry import ModelRegistry
from MedSegExtension.networks import build_network
from MedSegExtension.preprocessing import prepare_case, restore_probabilities
from MedSegExtension.progress import CancelToken

CPU = torch.device("cpu")


class ConstantLogits(nn.Module):
    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.view(1, -1, 1, 1, 1).expand(x.shape[0], -1, *x.shape[2:]).clone()


class BrightIsFirstClass(nn.Module):
    """Logits (0, 4·x, 0): bright voxels are class 1 wherever they are: not left-right aware."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zeros = torch.zeros_like(x)
        return torch.cat([zeros, 4 * x, zeros], dim=1)


class FailsOnBigBatches(nn.Module):
    """Raises CUDA's out-of-memory error whenever more than ``limit`` windows come at once."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_single_window_equals_one_forward_pass() -> None:
    torch.manual_seed(0)
    network = build_network(1, 3, make_tiny_card().network).eval()
    image = np.random.default_rng(0).normal(size=(1, 16, 16, 16)).astype(np.float32)
    result = sliding_window_probabilities(network, image, WindowSettings((16, 16, 16)), CPU)
    with torch.no_grad():
        expected = torch.softmax(network(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_no_seams_with_constant_logits() -> None:
    network = ConstantLogits([0.3, -1.0, 2.0]).eval()
    image = np.zeros((1, 40, 37, 29), dtype=np.float32)
    settings = WindowSettings((16, 16, 16), overlap=0.5)
    assert count_windows(image.shape[1:], settings.window, settings.overlap) > 20
    result = sliding_window_probabilities(network, image, settings, CPU)
    expected = torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0).numpy()
    np.testing.assert_allclose(result, np.broadcast_to(expected[:, None, None, None], result.shape), atol=1e-6)


def test_progress_counts_every_window_and_cancel_stops_within_one() -> None:
    network = FailsOnBigBatches(ConstantLogits([0.0, 1.0, 0.0]), limit=99)
    image = np.zeros((1, 40, 40, 40), dtype=np.float32)
    settings = WindowSettings((16, 16, 16), overlap=0.5)
    fractions = []
    sliding_window_probabilities(network, image, settings, CPU, progress=lambda f, m: fractions.append(f))
    assert len(network.batches) == count_windows((40, 40, 40), (16, 16, 16), 0.5) == len(fractions)
    assert fractions[-1] == pytest.approx(1.0)

    network.batches.clear()
    token = CancelToken()
    with pytest.raises(CancelledError):
        sliding_window_probabilities(network, image, settings, CPU, progress=lambda f, m: token.cancel(), cancel=token)
    assert len(network.batches) == 1


def test_out_of_memory_halves_the_window_batch() -> None:
    network = FailsOnBigBatches(ConstantLogits([0.0, 1.0, 0.0]), limit=1)
    image = np.zeros((1, 32, 32, 32), dtype=np.float32)
    messages = []
    result, device = probabilities_with_fallback(
        network, image, WindowSettings((16, 16, 16), batch_size=4), CPU, log=messages.append
    )
    assert device == CPU
    assert [m.split(" on cpu ")[1] for m in messages] == ["with window batch 4; retrying with 2",
                                                         "with window batch 2; retrying with 1"]
    np.testing.assert_allclose(result[1], torch.softmax(torch.tensor([0.0, 1.0, 0.0]), 0)[1].item(), atol=1e-6)


def test_out_of_memory_on_cpu_with_batch_one_is_raised() -> None:
    network = FailsOnBigBatches(ConstantLogits([0.0, 1.0, 0.0]), limit=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        probabilities_with_fallback(network, np.zeros((1, 16, 16, 16), np.float32), WindowSettings((16, 16, 16)), CPU,
                                    log=lambda m: None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: the fallback to the CPU moves the network")
def test_out_of_memory_on_gpu_falls_back_to_cpu() -> None:
    class FailsOnCuda(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = ConstantLogits([0.0, 1.0, 0.0])

        def forward(self, x):
            if x.is_cuda:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory.")
            return self.inner(x)

    messages = []
    _, device = probabilities_with_fallback(FailsOnCuda(), np.zeros((1, 16, 16, 16), np.float32),
                                            WindowSettings((16, 16, 16), batch_size=2), torch.device("cuda"),
                                            log=messages.append)
    assert device.type == "cpu" and "falling back to the CPU" in messages[-1]


def test_left_right_mirroring_swaps_paired_classes() -> None:
    image = np.zeros((1, 16, 16, 16), dtype=np.float32)
    image[0, 6:10, 6:10, 2:6] = 1.0  # a bright block on one side
    bright = (0, slice(6, 10), slice(6, 10), slice(2, 6))
    plain = WindowSettings((16, 16, 16), mirror_axes=[(2,)])
    swapped = WindowSettings((16, 16, 16), mirror_axes=[(2,)], lr_channel_permutation=[0, 2, 1])
    without_swap = sliding_window_probabilities(BrightIsFirstClass(), image, plain, CPU)
    with_swap = sliding_window_probabilities(BrightIsFirstClass(), image, swapped, CPU)
    # A network that ignores laterality says "class 1" on both passes unless the flip swaps classes.
    assert (without_swap[1][bright[1:]] > 0.9).all()
    np.testing.assert_allclose(with_swap[1][bright[1:]], with_swap[2][bright[1:]], atol=1e-6)


def test_prepare_and_restore_is_exact_when_no_interpolation_is_needed() -> None:
    # A RAS-oriented image at the model spacing: only axis flips, which must invert exactly.
    image = make_phantom(size=(20, 18, 16), spacing=(2.0, 2.0, 2.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    labels = sitk.Cast(sitk.BinaryThreshold(image, 150, 1000, 1, 0) + sitk.BinaryThreshold(image, 250, 1000, 1, 0),
                       sitk.sitkUInt8)
    card = make_tiny_card()
    case = prepare_case(image, card, labels=labels)
    assert case.image.shape[0] == 1
    one_hot = np.stack([(case.labels == value) for value in range(card.num_classes)]).astype(np.float32)
    restored = restore_probabilities(one_hot, case)
    np.testing.assert_array_equal(np.argmax(restored, axis=0), sitk.GetArrayFromImage(labels))


def test_pipeline_output_has_exactly_the_input_geometry(tiny_model_dir) -> None:
    direction = np.array(sitk.VersorRigid3DTransform((0.05, 0.1, -0.08, 0.99)).GetMatrix())
    image = make_phantom(size=(37, 30, 21), spacing=(0.9, 1.1, 2.3), direction=tuple(direction))
    card = ModelCard.load(tiny_model_dir)
    result = segment(image, card, InferenceOptions(probabilities=True, uncertainty=True, tta=True))
    for output in (result.labels, result.probabilities, result.uncertainty):
        assert same_geometry(output, image, tolerance=1e-9)
    values = set(np.unique(sitk.GetArrayFromImage(result.labels)))
    assert values <= {0, 1, 2, 3}
    probabilities = sitk.GetArrayFromImage(result.probabilities)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, atol=1e-4)
    uncertainty = sitk.GetArrayFromImage(result.uncertainty)
    assert uncertainty.min() >= 0.0 and uncertainty.max() <= 1.0 + 1e-6


def test_registry_finds_by_name_and_folder(tiny_model_dir, tmp_path) -> None:
    registry = ModelRegistry(bundled=tiny_model_dir.parent, user=tmp_path / "none")
    assert registry.find("tiny-test").folder == tiny_model_dir
    assert registry.find(str(tiny_model_dir)).name == "tiny-test"
    assert registry.default_name() == "tiny-test"
