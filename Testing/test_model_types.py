"""Model types beyond the 3D U-Net: 2.5D slice stacks, per-plane 2D U-Nets with a left/right-aware vote, recurrent refinement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from test_train_cli import write_config

from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError
from MedSegExtension.models.card import ModelCard, NetworkConfig
from MedSegExtension.models.registry import load_network
from MedSegExtension.networks import build_network
from MedSegExtension.networks.planes import PerPlaneUNet, plane_vote
from MedSegExtension.networks.recurrent import RecurrentRefinement
from MedSegExtension.networks.slices import SliceStackUNet
from MedSegExtension.training.config import config_from_dict

torch.set_num_threads(1)
LEFT, RIGHT, BODY = 1, 2, 3  # channels of test_training.LABELS; left_right_pairs [[1, 2]]
LR_SWAP = [0, RIGHT, LEFT, BODY]


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tmp_path / "bundled"))


def train_and_predict(tmp_path: Path, network: dict, **training) -> tuple[ModelCard, np.ndarray, np.ndarray]:
    """``medseg train`` then ``medseg predict`` on the validation case; (card, prediction, reference) arrays."""
    config = write_config(tmp_path, **training)
    text = config.read_text().replace("network:\n    channels:\n    - 4\n    - 8\n",
                                      "network: " + repr(network).replace("'", '"') + "\n")
    assert '"architecture"' in text
    config.write_text(text)
    assert main(["train", str(config), "--progress", "none"]) == 0
    folder = tmp_path / "out" / "cli-toy"
    output = tmp_path / "pred.nii.gz"
    assert main(["predict", str(tmp_path / "data" / "c2_img.nii.gz"), "--model", str(folder), "-o", str(output)]) == 0
    prediction = sitk.GetArrayFromImage(sitk.ReadImage(str(output)))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "data" / "c2_seg.nii.gz")))
    return ModelCard.load(folder), prediction, reference


def dice(prediction: np.ndarray, reference: np.ndarray, value: int) -> float:
    a, b = prediction == value, reference == value
    return 2 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_a_25d_model_trains_and_predicts_through_the_cli(tmp_path):
    network = {"architecture": "unet2.5d", "slices": 3, "channels": [8, 16]}
    card, prediction, reference = train_and_predict(tmp_path, network, steps=40, batch_size=2, val_every=40, lr=0.02,
                                                    augmentation={"enabled": False})
    assert card.network.architecture == "unet2.5d" and card.network.slices == 3  # the card records the model type
    assert isinstance(load_network(card), SliceStackUNet)
    assert prediction.shape == reference.shape
    assert dice(prediction, reference, BODY) > 0.8  # it learned: an untrained or misassembled network does not
    assert card.network.summary() == "unet2.5d (3 slices)"  # what `medseg models` shows


def test_each_25d_output_slice_sees_exactly_its_k_adjacent_input_slices():
    network = SliceStackUNet(1, 3, NetworkConfig(architecture="unet2.5d", channels=(4, 8), slices=3), axis=2).eval()
    x = torch.randn(1, 1, 10, 16, 16)
    changed = x.clone()
    changed[:, :, 5] += 10.0
    with torch.no_grad():
        difference = (network(changed) - network(x)).abs().amax(dim=(0, 1, 3, 4))
    assert torch.nonzero(difference > 1e-6).flatten().tolist() == [4, 5, 6]


def mirrored_phantom(size: int = 16) -> np.ndarray:
    """Labels (k, j, i) of a left-right symmetric body: a left blob (+i side) and its mirror image, the right blob."""
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, size),) * 3, indexing="ij")
    labels = np.zeros((size,) * 3, np.int64)
    labels[(i**2 + j**2 + k**2) < 0.7] = BODY
    labels[((i - 0.4) ** 2 + j**2 + k**2) < 0.06] = LEFT
    labels[((i + 0.4) ** 2 + j**2 + k**2) < 0.06] = RIGHT
    assert (labels[..., ::-1] == np.array(LR_SWAP)[labels]).all()  # mirrored: a flip swaps left and right
    return labels


def probabilities(labels: np.ndarray, confidence: float, swap_sides: bool = False) -> torch.Tensor:
    """(1, 4, ...) probabilities that favour ``labels`` by ``confidence``; on the left/right blobs the rest goes to the other side."""
    truth = np.array(LR_SWAP)[labels] if swap_sides else labels
    p = np.full((4, *labels.shape), 0.0)
    for channel in range(4):
        p[channel][truth == channel] = confidence
    sided = np.isin(truth, (LEFT, RIGHT))
    p[LEFT][sided & (truth == RIGHT)] = p[RIGHT][sided & (truth == LEFT)] = 1 - confidence
    p[0][~sided] += 1 - confidence
    return torch.from_numpy(p)[None].float()


@pytest.mark.parametrize("mirrored", [False, True])
def test_the_plane_vote_maps_left_right_classes_correctly_on_a_mirrored_phantom(mirrored):
    labels = mirrored_phantom()
    if mirrored:
        labels = np.ascontiguousarray(labels[..., ::-1])
    # Axial and coronal slices show both sides of the midline: right, but unsure (0.6 vs 0.4). The sagittal
    # network cannot tell left from right: here it is sure and wrong, the trap of seed 003.
    axial = coronal = probabilities(labels, 0.6)
    sagittal = probabilities(labels, 1.0, swap_sides=True)
    naive = plane_vote(axial, coronal, sagittal).argmax(1)[0].numpy()
    vote = plane_vote(axial, coronal, sagittal, LR_SWAP)
    assert torch.allclose(vote.sum(1), torch.ones(1)), "the vote is a probability distribution"
    assert (vote.argmax(1)[0].numpy() == labels).all()
    sided = np.isin(labels, (LEFT, RIGHT))
    assert (naive[sided] != labels[sided]).all()  # a plain mean would swap the blobs, as seed 003 saw


def test_a_sagittal_network_gives_mirror_slices_of_a_symmetric_image_the_same_prediction():
    labels = mirrored_phantom()
    image = torch.from_numpy(100.0 * (labels > 0) + 150.0 * np.isin(labels, (LEFT, RIGHT))).float()[None, None]
    assert torch.equal(image, image.flip(4))  # both blobs look alike: only the side of the midline tells them apart
    sagittal = SliceStackUNet(1, 4, NetworkConfig(channels=(4, 8), slices=1), axis=4).eval()
    with torch.no_grad():
        out = sagittal(image)
    assert torch.allclose(out, out.flip(4), atol=1e-5)  # same slice image, same output: it cannot know the side


def test_per_plane_unets_train_and_predict_through_the_cli(tmp_path):
    network = {"architecture": "unet2d_planes", "slices": 1, "channels": [8, 16]}
    card, prediction, reference = train_and_predict(tmp_path, network, steps=40, batch_size=2, val_every=40, lr=0.02,
                                                    augmentation={"enabled": False})
    model = load_network(card)
    assert isinstance(model, PerPlaneUNet) and model.lr_permutation == LR_SWAP  # the vote knows the card's pairs
    assert set(model.planes) == {"axial", "coronal", "sagittal"}
    assert dice(prediction, reference, BODY) > 0.8


def test_recurrent_refinement_feeds_back_the_previous_prediction_from_zeros():
    network = build_network(1, 4, NetworkConfig(channels=(4, 8), recurrent_passes=3))
    assert isinstance(network, RecurrentRefinement)
    seen: list[torch.Tensor] = []
    outputs: list[torch.Tensor] = []

    def record(module, args, output) -> None:
        seen.append(args[0])
        outputs.append(output)

    network.core.register_forward_hook(record)
    x = torch.randn(2, 1, 8, 8, 8)
    final = network.eval()(x)
    assert len(seen) == 3 and all(torch.equal(s[:, :1], x) for s in seen)
    assert torch.equal(seen[0][:, 1:], torch.zeros(2, 4, 8, 8, 8))
    assert torch.allclose(seen[1][:, 1:], outputs[0].softmax(1)) and torch.allclose(seen[2][:, 1:], outputs[1].softmax(1))
    assert torch.equal(final, outputs[2])


def test_recurrent_refinement_trains_and_predicts_through_the_cli(tmp_path):
    network = {"architecture": "unet3d", "recurrent_passes": 2, "channels": [4, 8]}
    card, prediction, reference = train_and_predict(tmp_path, network, steps=3)
    assert card.network.summary() == "unet3d, recurrent refinement: 2 passes"
    model = load_network(card)
    assert isinstance(model, RecurrentRefinement) and model.core.in_channels == 1 + card.num_classes
    assert prediction.shape == reference.shape


@pytest.mark.parametrize(("network", "message"), [
    ({"architecture": "unet2d"}, "network.architecture must be one of unet3d, unet2.5d, unet2d_planes"),
    ({"architecture": "unet2.5d", "slices": 2}, "network.slices must be an odd integer"),
    ({"recurrent_passes": 0}, "network.recurrent_passes must be an integer >= 1"),
    ({"architecture": "unet2d_planes", "deep_supervision": True}, "deep_supervision is not available"),
])
def test_bad_model_types_are_refused_by_the_recipe_in_one_line(tmp_path, network, message):
    from test_training import base_config

    raw = base_config(tmp_path)
    raw["model"]["network"] = {"channels": [4, 8], **network}
    with pytest.raises(InputError, match=message) as error:
        config_from_dict(raw, tmp_path, "r.yaml")
    assert str(error.value).startswith("r.yaml: model.network.") and "\n" not in str(error.value)
