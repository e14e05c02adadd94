"""The training framework on real files: checks, sampling, augmentation, learning, resume, DDP."""

from __future__ import annotations

import copy
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_tiny_card

from MedSegExtension.errors import CancelledError, InputError
from MedSegExtension.models.card import ModelCard
from MedSegExtension.progress import CancelToken
from MedSegExtension.training.augmentation import AugmentationConfig, Augmenter, flip_left_right, lr_axis
from MedSegExtension.training.config import config_from_dict, load_config
from MedSegExtension.training.dataset import PatchBatches, TrainingCase, iterate_batches, prepare_cases
from MedSegExtension.training.launch import launch_local
from MedSegExtension.training.sampling import PatchSampler, class_locations, crop
from MedSegExtension.training.trainer import train

torch.set_num_threads(1)

LABELS = [
    {"value": 1, "name": "Left blob", "color": [230, 80, 80]},
    {"value": 2, "name": "Right blob", "color": [80, 80, 230]},
    {"value": 3, "name": "Body", "color": [80, 200, 80]},
]
NO_AUGMENTATION = {"enabled": False}


def phantom_arrays(size=(24, 20, 20), seed=0, shift=0.0):
    """(image, labels) arrays (k, j, i): a body with a left blob (value 1, +i side) and a right blob (2)."""
    rng = np.random.default_rng(seed)
    k, j, i = np.meshgrid(*(np.linspace(-1, 1, n) for n in size[::-1]), indexing="ij")
    body = (i**2 + j**2 + (k - shift) ** 2) < 0.7
    left = ((i - 0.4) ** 2 + j**2 + (k - shift) ** 2) < 0.06
    right = ((i + 0.4) ** 2 + j**2 + (k - shift) ** 2) < 0.06
    labels = np.zeros(body.shape, np.uint8)
    labels[body], labels[left], labels[right] = 3, 1, 2
    image = 100.0 * body + 150.0 * left + 250.0 * right + rng.normal(0, 5, body.shape)
    return image.astype(np.float32), labels


def write_case(folder: Path, name: str, seed: int = 0, spacing=(2.0, 2.0, 2.0), labels=None, **kwargs) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    image_array, label_array = phantom_arrays(seed=seed, **kwargs)
    if labels is not None:
        label_array = labels
    image = sitk.GetImageFromArray(image_array)
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, -20.0, -20.0))
    label = sitk.GetImageFromArray(label_array)
    label.CopyInformation(image)
    paths = {"image": str(folder / f"{name}_img.nii.gz"), "label": str(folder / f"{name}_seg.nii.gz")}
    sitk.WriteImage(image, paths["image"])
    sitk.WriteImage(label, paths["label"])
    return paths


def base_config(tmp_path: Path, cases: int = 3, **training) -> dict:
    data = tmp_path / "data"
    entries = [write_case(data, f"case{n}", seed=n, shift=0.1 * (n - 1)) for n in range(cases)]
    return {
        "model": {
            "name": "toy-blobs", "version": "1.0.0", "description": "test", "modality": "CT",
            "labels": LABELS, "left_right_pairs": [[1, 2]], "target_spacing": [2, 2, 2],
            "window_size": [16, 16, 16], "normalization": {"kind": "window", "lower": 0, "upper": 400},
            "network": {"channels": [4, 8]},
        },
        "data": {"cases": entries, "val_fraction": 0.34},
        "training": {"steps": 4, "batch_size": 2, "lr": 0.01, "val_every": 2, "device": "cpu", "seed": 1,
                     **training},
        "output": str(tmp_path / "models" / "toy-blobs"),
    }


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tmp_path / "bundled"))


# ---------------------------------------------------------------- config and data checks


def test_all_data_problems_reported_before_training(tmp_path):
    config = base_config(tmp_path, cases=1)
    data = tmp_path / "data"
    good = config["data"]["cases"][0]
    unknown = write_case(data, "unknown", labels=np.full((20, 20, 24), 7, np.uint8))
    empty = write_case(data, "empty", labels=np.zeros((20, 20, 24), np.uint8))
    mismatch = write_case(data, "mismatch")
    moved = sitk.ReadImage(mismatch["label"])
    moved.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(moved, mismatch["label"])
    config["data"]["cases"] = [good, {"image": str(data / "nothere.nii.gz"), "label": good["label"]},
                               unknown, empty, mismatch]
    with pytest.raises(InputError) as info:
        train(config)
    lines = str(info.value).splitlines()
    assert len(lines) == 4
    assert "nothere.nii.gz: no such file" in lines[0]
    assert lines[1].startswith(unknown["label"]) and "label values 7 are not labels" in lines[1]
    assert lines[2].startswith(empty["label"]) and "empty" in lines[2]
    assert lines[3].startswith(mismatch["label"]) and "geometry differs" in lines[3]
    assert not (tmp_path / "models").exists()  # nothing written: training never started


def test_config_typos_and_bad_values_are_one_line_errors(tmp_path):
    config = base_config(tmp_path, cases=1)
    typo = copy.deepcopy(config)
    typo["training"]["learning_rate"] = 0.1
    with pytest.raises(InputError, match=r"unknown key training\.learning_rate"):
        config_from_dict(typo)
    bad_patch = copy.deepcopy(config)
    bad_patch["training"]["patch_size"] = [16, 16, 15]
    with pytest.raises(InputError, match="multiples of 2"):
        config_from_dict(bad_patch)
    bad_map = copy.deepcopy(config)
    bad_map["data"]["label_map"] = {4: 9}
    with pytest.raises(InputError, match="sends 4 to 9"):
        config_from_dict(bad_map)
    path = tmp_path / "broken.yaml"
    path.write_text("model: [\n")
    with pytest.raises(InputError, match="broken.yaml: invalid YAML"):
        load_config(path)


def test_folder_and_list_file_pairing(tmp_path):
    root = tmp_path / "set"
    for name in ("a", "b"):
        paths = write_case(tmp_path / "raw", name)
        (root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (root / "labelsTr").mkdir(parents=True, exist_ok=True)
        Path(paths["image"]).rename(root / "imagesTr" / f"{name}_0000.nii.gz")
        Path(paths["label"]).rename(root / "labelsTr" / f"{name}.nii.gz")
    listing = tmp_path / "list.csv"
    listing.write_text("image,label\n# a comment\nset/imagesTr/a_0000.nii.gz, set/labelsTr/a.nii.gz\n")
    raw = {"model": {"name": "x", "labels": LABELS, "window_size": [16, 16, 16], "network": {"channels": [4, 8]}},
           "data": {"folder": "set", "list_file": "list.csv"}}
    cfg = config_from_dict(raw, tmp_path)
    names = [(c.name, [p.name for p in c.images], c.label.name) for c in cfg.data.cases]
    assert names == [("a", ["a_0000.nii.gz"], "a.nii.gz"), ("b", ["b_0000.nii.gz"], "b.nii.gz"),
                     ("a", ["a_0000.nii.gz"], "a.nii.gz")]
    (root / "labelsTr" / "b.nii.gz").unlink()
    with pytest.raises(InputError, match=r"b_0000.nii.gz: no matching label file"):
        config_from_dict(raw, tmp_path)


def test_label_map_merges_values_and_weight_maps_mask(tmp_path):
    config = base_config(tmp_path, cases=1)
    _, labels = phantom_arrays()
    labels = labels.copy()
    labels[labels == 3] = 12  # the source calls the body 12 ...
    labels[:, :, :4][labels[:, :, :4] == 12] = 13  # ... and part of it 13; both are "Body"
    case = write_case(tmp_path / "data", "mapped", labels=labels)
    weight = sitk.GetImageFromArray(np.where(np.arange(20)[:, None, None] < 10, 1.0, 0.0).astype(np.float32)
                                    * np.ones((20, 20, 24), np.float32))
    weight.CopyInformation(sitk.ReadImage(case["label"]))
    sitk.WriteImage(weight, str(tmp_path / "weight.nii.gz"))
    config["data"]["cases"] = [{**case, "weight": str(tmp_path / "weight.nii.gz")}]
    config["data"]["label_map"] = {12: 3, 13: 3}
    config["model"]["crop_foreground"] = False
    cfg = config_from_dict(config)
    (prepared,) = prepare_cases(cfg.data.cases, cfg.card, cfg.data)
    assert set(np.unique(prepared.labels)) == {0, 1, 2, 3}
    assert np.array_equal(prepared.labels == 3, (labels == 12) | (labels == 13))
    assert np.array_equal(prepared.weight, sitk.GetArrayFromImage(weight))
    batches = PatchBatches([prepared], cfg.card, (16, 16, 16), 4, foreground_fraction=1.0, seed=0)
    for step in range(3):  # centres only on labelled voxels inside the weighted half
        batch = batches[step]
        assert batch["weight"].sum() > 0
    assert all(coords[:, 0].max() < 10 for coords in prepared.locations.values())


# ---------------------------------------------------------------- sampling and augmentation


def test_patch_sampling_is_balanced_between_foreground_and_background():
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[5:7, 5:7, 5:7] = 1  # 8 voxels
    labels[20:35, 20:35, 20:35] = 2  # 3375 voxels
    locations = class_locations(labels)
    rng = np.random.default_rng(0)
    half = [PatchSampler(0.5).centre(labels.shape, locations, rng) for _ in range(2000)]
    in_fg = np.array([labels[c] > 0 for c in half])
    assert 0.45 < in_fg.mean() < 0.58  # seed 004: as many foreground as background patches
    only_fg = [labels[PatchSampler(1.0).centre(labels.shape, locations, rng)] for _ in range(1000)]
    counts = np.bincount(only_fg, minlength=3)
    assert counts[0] == 0 and abs(counts[1] - counts[2]) < 150  # the tiny class is drawn as often as the big one
    volume = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    box = crop(volume, (0, 2, 5), (4, 4, 4), pad_value=-1)
    assert box[2, 2, 2] == volume[0, 2, 5] and box[0, 0, 0] == -1 and (box == -1).sum() == 4 * 4 * 4 - 2 * 4 * 3


def test_left_right_flip_swaps_paired_labels_and_mirrors():
    card = make_tiny_card()  # labels 1 "Left blob", 2 "Right blob" (a pair), 3 "Body"; LPS
    assert lr_axis("LPS") == 2 and lr_axis("RAS") == 2 and lr_axis("PLS") == 1 and lr_axis("SIL") == 0
    image = np.zeros((1, 8, 8, 8), np.float32)
    label = np.zeros((1, 8, 8, 8), np.float32)
    label[0, 3:5, 3:5, 6] = 1  # a left blob: in LPS the last axis runs right -> left, so left is high i
    label[0, 0, 0, 0:3] = 3  # body, unpaired
    image[0, 3:5, 3:5, 6] = 5.0
    sample = {"image": image, "label": label, "weight": np.ones_like(label)}
    flipped = flip_left_right(sample, card.channel_swap_for_lr_flip(), lr_axis(card.orientation))
    assert np.array_equal(np.argwhere(flipped["label"][0] == 2), np.argwhere(label[0] == 1) * [1, 1, -1] + [0, 0, 7])
    assert not (flipped["label"] == 1).any()  # no left blob remains: it became the mirrored right blob
    assert np.array_equal(flipped["label"][0, 0, 0, 5:8], [3, 3, 3])  # unpaired labels only mirror
    assert flipped["image"][0, 3, 3, 1] == 5.0
    # Through the MONAI pipeline: flip on, everything else off.
    augmenter = Augmenter(AugmentationConfig(affine_prob=0, bias_field_prob=0, gamma_prob=0, noise_prob=0,
                                             blur_prob=0, flip_lr_prob=1.0), (8, 8, 8), card)
    out = augmenter(sample, seed=3)
    assert np.array_equal(out["label"], flipped["label"]) and np.array_equal(out["image"], flipped["image"])


def test_augmentation_is_seeded_and_keeps_labels_valid():
    card = make_tiny_card()
    image_array, labels = phantom_arrays(size=(24, 24, 24))
    config = AugmentationConfig(affine_prob=1.0, elastic_prob=1.0, bias_field_prob=1.0, gamma_prob=1.0,
                                noise_prob=1.0, blur_prob=1.0, flip_lr_prob=0.5)
    augmenter = Augmenter(config, (16, 16, 16), card)
    sample = {"image": image_array[None] / 400, "label": labels[None].astype(np.float32),
              "weight": np.ones((1, 24, 24, 24), np.float32)}
    a, b, c = augmenter(sample, 1), augmenter(sample, 1), augmenter(sample, 2)
    assert a["image"].shape == (1, 16, 16, 16) and a["label"].shape == (1, 16, 16, 16)
    assert all(np.array_equal(a[key], b[key]) for key in a)
    assert not np.array_equal(a["image"], c["image"])
    assert set(np.unique(a["label"])) <= {0, 1, 2, 3}
    assert not np.array_equal(a["label"], labels[None, 4:20, 4:20, 4:20])  # the geometry really changed
    # Voxels pulled in from outside the volume are masked out of the loss.
    outside = {"image": np.ones((1, 16, 16, 16), np.float32), "label": np.ones((1, 16, 16, 16), np.float32),
               "weight": np.ones((1, 16, 16, 16), np.float32)}
    rotated = Augmenter(AugmentationConfig(affine_prob=1.0, rotation_degrees=40, scale=(0.7, 0.7), gamma_prob=0,
                                           bias_field_prob=0, noise_prob=0, blur_prob=0, flip_lr_prob=0),
                        (16, 16, 16), card)(outside, 5)
    assert (rotated["weight"] == 0).any() and np.all(rotated["label"][rotated["weight"] == 0] == 0)


def test_batches_depend_only_on_seed_and_step():
    card = make_tiny_card()
    image, labels = phantom_arrays()
    case = TrainingCase("a", labels, (image / 400)[None])
    dataset = PatchBatches([case], card, (16, 16, 16), 2, augmentation=AugmentationConfig(), seed=4, steps=3)
    serial = list(iterate_batches(dataset, 0, 3))
    parallel = list(iterate_batches(dataset, 1, 3, num_workers=2))
    for one, other in zip(serial[1:], parallel, strict=True):
        assert all(torch.equal(one[key], other[key]) for key in one)
    assert serial[0]["image"].shape == (2, 1, 16, 16, 16) and serial[0]["target"].dtype == torch.int64
    assert not torch.equal(serial[0]["image"], serial[1]["image"])


# ---------------------------------------------------------------- training


def test_training_learns_and_writes_a_model(tmp_path):
    config = base_config(tmp_path, steps=40, val_every=20, augmentation=NO_AUGMENTATION)
    losses: list[float] = []
    card = train(config, on_step=lambda step, loss: losses.append(loss))
    folder = Path(config["output"])
    assert card.folder == folder and (folder / "model.json").is_file()
    saved = ModelCard.load(folder)
    assert saved.name == "toy-blobs" and saved.left_right_pairs == [(1, 2)]
    record = saved.training
    assert record["steps"] == 40 and record["seed"] == 1 and record["device"] == "cpu"
    assert len(record["train_cases"]) == 2 and len(record["val_cases"]) == 1 and record["config_hash"]
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert record["validation"]["dice"]["Body"] > 0.8
    assert set(record["validation"]["dice"]) == {"Left blob", "Right blob", "Body"}
    assert {p.name for p in (folder / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    # Fine-tuning starts from those weights (lr ~ 0: the result is the starting point).
    tuned = dict(config, output=str(tmp_path / "tuned"),
                 training={**config["training"], "init_from": str(folder), "steps": 1, "lr": 1e-12})
    train(tuned)
    start, end = (torch.load(f / "model.pt", weights_only=True) for f in (folder, tmp_path / "tuned"))
    assert all(torch.allclose(start[k].float(), end[k].float(), atol=1e-6) for k in start)


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    augmentation = {"affine_prob": 0.5, "flip_lr_prob": 0.5, "noise_prob": 0.5, "gamma_prob": 0.5}
    config = base_config(tmp_path, steps=6, val_every=3, checkpoint_every=3, augmentation=augmentation)
    config["model"]["network"]["dropout"] = 0.1  # the torch RNG matters too
    straight = dict(config, output=str(tmp_path / "straight"))
    train(straight)

    interrupted = dict(config, output=str(tmp_path / "interrupted"))
    token = CancelToken()
    with pytest.raises(CancelledError, match="cancelled at step 3"):
        train(interrupted, cancel=token, on_step=lambda step, loss: token.cancel() if step == 3 else None)
    checkpoint = torch.load(tmp_path / "interrupted" / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 3 and not (tmp_path / "interrupted" / "model.json").exists()
    with pytest.raises(InputError, match="pass --resume"):
        train(interrupted)
    card = train(interrupted, resume=True)
    assert card.training["steps"] == 6

    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "interrupted" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["best_score"] == b["best_score"] and a["best_step"] == b["best_step"]
    assert a["scheduler"] == b["scheduler"]
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
    wa = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    wb = torch.load(tmp_path / "interrupted" / "model.pt", weights_only=True)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # A run with another seed really differs (the comparison above is not vacuous).
    other = dict(config, output=str(tmp_path / "other"), training={**config["training"], "seed": 2, "steps": 3})
    train(other)
    c = torch.load(tmp_path / "other" / "checkpoints" / "last.pt", weights_only=True)
    assert not torch.equal(c["model"]["head.conv.conv.weight"], checkpoint["model"]["head.conv.conv.weight"])


def test_time_budget_and_early_stop(tmp_path):
    config = base_config(tmp_path, steps=100000, max_seconds=1.0, val_every=100000, augmentation=NO_AUGMENTATION)
    card = train(config)
    assert card.training["stopped"] == "time" and 1 <= card.training["steps"] < 1000
    assert card.training["validation"] is not None  # validated once at the end
    frozen = base_config(tmp_path / "b", steps=50, lr=1e-12, val_every=1, early_stop_patience=2,
                         augmentation=NO_AUGMENTATION)
    card = train(frozen)
    assert card.training["stopped"] == "early_stop" and card.training["steps"] == 3


def test_a_cpu_time_budget_stops_training_after_that_much_cpu_time(tmp_path):
    started = time.process_time()
    config = base_config(tmp_path, steps=100000, max_cpu_seconds=1.0, val_every=100000, augmentation=NO_AUGMENTATION)
    card = train(config)
    assert card.training["stopped"] == "time" and 1 <= card.training["steps"] < 1000
    assert time.process_time() - started >= 1.0


def test_output_folder_rules(tmp_path):
    config = base_config(tmp_path, steps=2, val_every=2, augmentation=NO_AUGMENTATION)
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "model.json").write_text(json.dumps({**make_tiny_card("someone-else").to_dict()}))
    with pytest.raises(InputError, match="holds model 'someone-else'; refusing to overwrite"):
        train(dict(config, output=str(occupied)))
    bundled = tmp_path / "bundled"
    with pytest.raises(InputError, match="--bundled"):
        train(dict(config, output=str(bundled / "toy-blobs")))
    with pytest.raises(InputError, match="nothing to resume"):
        train(config, resume=True)
    no_output = {k: v for k, v in config.items() if k != "output"}
    card = train(no_output, bundled=True)  # the documented retrain command
    assert card.folder == bundled / "toy-blobs" and (bundled / "toy-blobs" / "model.pt").is_file()
    assert not (bundled / "toy-blobs" / "checkpoints").exists()
    assert (tmp_path / "home" / "checkpoints" / "toy-blobs" / "last.pt").is_file()
    with pytest.raises(InputError, match="belongs to a bundled model"):
        train(no_output)  # a user model may not shadow the bundled one


def test_synthetic_cases_make_images_on_the_fly(tmp_path):
    config = base_config(tmp_path, cases=2, steps=2, val_every=2, augmentation=NO_AUGMENTATION, batch_size=1)
    config["data"]["cases"][1] = {"label": config["data"]["cases"][1]["label"], "synthesize": True}
    config["data"]["val_cases"] = [{"label": config["data"]["cases"][0]["label"], "synthesize": True}]
    cfg = config_from_dict(config)
    from MedSegExtension.training.dataset import make_synthesizer

    synthesizer = make_synthesizer(cfg.data, cfg.card, 0)
    (case,) = prepare_cases(cfg.data.cases[1:], cfg.card, cfg.data)
    assert case.synthesize and case.image is None
    dataset = PatchBatches([case], cfg.card, (16, 16, 16), 1, synthesizer=synthesizer, seed=0)
    first, second = dataset[0]["image"], dataset[1]["image"]
    assert torch.isfinite(first).all() and first.std() > 0 and not torch.equal(first, second)
    card = train(config)
    assert card.training["train_cases"][1]["synthesize"] is True and card.training["validation"] is not None


def test_ddp_two_processes_on_cpu(tmp_path, monkeypatch):
    config = base_config(tmp_path, steps=2, val_every=2, augmentation=NO_AUGMENTATION)
    card, finished = launch_local(config, nprocs=2)
    assert finished == [0, 1]
    assert card["training"]["processes"] == 2 and card["training"]["steps"] == 2
    folder = Path(config["output"])
    assert Path(card["folder"]) == folder and ModelCard.load(folder).sha256 == card["sha256"]


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    from MedSegExtension.training.checkpoints import read_checkpoint, write_checkpoint
    from MedSegExtension.training.rng import rng_states, set_rng_states

    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    np.random.normal()  # numpy caches a second Gaussian: that state must survive too
    path = write_checkpoint(tmp_path / "last.pt", {"rng": rng_states(torch.device("cpu"))})
    expected = (np.random.normal(), np.random.randint(1 << 30), random.random(), torch.rand(3))
    set_rng_states(read_checkpoint(path)["rng"], torch.device("cpu"))
    drawn = (np.random.normal(), np.random.randint(1 << 30), random.random(), torch.rand(3))
    assert expected[:3] == drawn[:3] and torch.equal(expected[3], drawn[3])


def test_damaged_or_old_checkpoints_are_one_line_errors(tmp_path):
    from MedSegExtension.training.checkpoints import write_checkpoint
    from MedSegExtension.training.loop import LoopOptions, TrainingLoop

    loop = TrainingLoop(torch.nn.Linear(2, 2), lambda *a: torch.zeros(()), lambda start: iter(()), LoopOptions(steps=1))
    incomplete = write_checkpoint(tmp_path / "incomplete.pt", {"step": 1, "model": loop.module.state_dict()})
    with pytest.raises(InputError, match=r"incomplete\.pt: incomplete or damaged checkpoint \(KeyError"):
        loop.resume(incomplete)
    old = tmp_path / "old.pt"
    torch.save({"format": 1, "step": 1}, old)
    with pytest.raises(InputError, match=r"old\.pt: not a MedSeg training checkpoint of format 2 \(format 1"):
        loop.resume(old)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(incomplete.read_bytes()[:100])
    with pytest.raises(InputError, match=r"truncated\.pt: cannot read checkpoint \(\w+: [^\n]*$"):
        loop.resume(truncated)
