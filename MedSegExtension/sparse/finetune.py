"""Fine-tune (or train from scratch) a 3D U-Net on one volume's sparse labels, then densify it.

The loss sees only known voxels (weight 1); every other voxel has weight 0 and contributes
nothing, to the loss or to its gradient (Çiçek et al. 2016). Patches are centred on known
voxels, half of them on a labelled structure. Training stops at the time budget, at the step
limit, on cancel, or when the held-out slice's Dice stops improving; the best state by
held-out Dice is kept.

Working grid: the image's own voxels, reoriented to the card orientation but never resampled,
so a one-voxel-thick annotated slice stays exactly one slice thick.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
import torch

from .. import __version__
from ..errors import InputError
from ..inference.devices import resolve_device
from ..inference.pipeline import InferenceOptions, Segmenter
from ..inference.sliding_window import WindowSettings, count_windows, sliding_window_probabilities
from ..metrics.overlap import overlap_metrics
from ..models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
from ..models.registry import ModelRegistry, load_network, next_user_model_folder, save_model
from ..networks import UNet3D, build_network
from ..preprocessing import prepare_case, reorient
from ..progress import CancelToken, ProgressCallback, no_progress
from ..training.augmentation import flip_left_right
from ..training.losses import build_loss
from .annotations import SliceRef, SparseAnnotation
from .priors import class_boxes, keep_annotated_components, restrict_to_boxes, union_mask
from .suggest import structure_region, suggest_slices

UNKNOWN = 65535  # label value marking voxels nobody labelled, while labels travel through preprocessing


@dataclass
class FineTuneSettings:
    base_model: str | None = None  # name or folder; None trains from scratch
    time_budget: float | None = None  # seconds; default 150 on the CPU, 30 on a GPU
    max_steps: int = 3000
    device: str = "auto"
    seed: int = 0
    patch_size: tuple[int, int, int] | None = None  # (i, j, k); default: the base model's window, else 64³
    batch_size: int = 2
    learning_rate: float | None = None  # default 3e-4 from a base model, 1e-3 from scratch
    foreground_fraction: float = 0.5
    loss: str = "dice_ce"
    hold_out: bool = True  # with ≥ 3 annotated slices, keep one aside to measure Dice
    validate_every: int = 20
    patience: int = 6  # validations without improvement before stopping early
    flip_left_right: bool = False  # off by default: one volume's left/right layout is information
    # Spatial priors from the annotation (see sparse/priors.py): each class stays near its labelled
    # voxels, in pieces that touch them.
    use_annotation_priors: bool = True
    network: NetworkConfig = field(default_factory=lambda: NetworkConfig(channels=(16, 32, 64, 128)))
    suggestions: int = 3


@dataclass
class FineTuneResult:
    card: ModelCard  # not saved yet: see save_finetuned
    network: UNet3D
    labels: sitk.Image  # dense prediction on the image grid
    uncertainty: sitk.Image
    held_out: SliceRef | None
    held_out_dice: float | None
    steps: int
    seconds: float
    stopped_because: str
    losses: list[float]
    suggestions: dict[str, list[tuple[int, float]]]
    reused_classes: list[str]


def _same_name(a: str, b: str) -> bool:
    return a.strip().lower() == b.strip().lower()


def _build_network(
    base: ModelCard | None, classes: Sequence[LabelInfo], settings: FineTuneSettings, device: torch.device
) -> tuple[UNet3D, list[str]]:
    """A network for the user's classes; from a base model, matching classes keep their output channels."""
    if base is None:
        return build_network(1, 1 + len(classes), settings.network).to(device), []
    if base.input_channels != 1:
        raise InputError(f"base model {base.name!r} takes {base.input_channels} channels; sparse mode needs 1")
    source = load_network(base, "cpu")
    network = build_network(1, 1 + len(classes), base.network)
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(("head.", "aux_heads."))}
    network.load_state_dict(state, strict=False)
    reused = []
    # Output head: background and each class whose name matches a base label start from that channel.
    base_channel = {label.name.lower(): index + 1 for index, label in enumerate(base.labels)}
    heads = [(network.head, source.head)] + list(zip(network.aux_heads, source.aux_heads))
    with torch.no_grad():
        for new_head, old_head in heads:
            new_conv, old_conv = new_head.conv.conv, old_head.conv.conv
            new_conv.weight[0] = old_conv.weight[0]
            new_conv.bias[0] = old_conv.bias[0]
            for index, label in enumerate(classes, start=1):
                channel = base_channel.get(label.name.lower())
                if channel is not None:
                    new_conv.weight[index] = old_conv.weight[channel]
                    new_conv.bias[index] = old_conv.bias[channel]
                    if new_head is network.head:
                        reused.append(label.name)
    return network.to(device), reused


def _card_for(image: sitk.Image, base: ModelCard | None, classes: Sequence[LabelInfo], settings: FineTuneSettings,
              name: str) -> ModelCard:
    orientation = base.orientation if base else "LPS"
    # The spacing of the image as the network sees it (reoriented), so preprocessing never resamples.
    spacing = tuple(round(s, 6) for s in reorient(image, orientation).GetSpacing())
    pairs = []
    for left in classes:
        if left.name.lower().startswith("left "):
            for right in classes:
                if _same_name(right.name, "right " + left.name[5:]):
                    pairs.append((left.value, right.value))
    return ModelCard(
        name=name,
        version="1",
        description=(f"Fine-tuned from {base.name} {base.version}" if base else "Trained from scratch")
        + " on sparse annotations of one volume",
        modality=base.modality if base else "any",
        input_channels=1,
        labels=[replace(label) for label in classes],
        target_spacing=spacing,  # type: ignore[arg-type]
        window_size=tuple(settings.patch_size),  # type: ignore[arg-type]
        orientation=orientation,
        normalization=copy.deepcopy(base.normalization) if base else Normalization("percentile", 0.5, 99.5),
        network=copy.deepcopy(base.network) if base else copy.deepcopy(settings.network),
        left_right_pairs=pairs,
        crop_foreground=False,
        license=base.license if base else "",
    )


def _pad_to(array: np.ndarray, shape: Sequence[int], value: float) -> np.ndarray:
    pads = [(0, max(0, s - n)) for n, s in zip(array.shape[-3:], shape)]
    if not any(p[1] for p in pads):
        return array
    return np.pad(array, [(0, 0)] * (array.ndim - 3) + pads, constant_values=value)


class _PatchSampler:
    """Patches centred near known voxels; a ``foreground_fraction`` of them on a labelled structure."""

    def __init__(self, image: np.ndarray, target: np.ndarray, weight: np.ndarray, patch: Sequence[int],
                 foreground_fraction: float, rng: np.random.Generator, focus: np.ndarray | None = None) -> None:
        self.patch = np.array(patch)
        self.image = _pad_to(image, patch, float(image.min()))
        self.target = _pad_to(target, patch, 0)
        self.weight = _pad_to(weight, patch, 0.0)
        self.known = np.argwhere(self.weight > 0)
        if focus is not None:  # known voxels near the structures: the negatives that teach the borders
            near = np.argwhere((self.weight > 0) & _pad_to(focus, patch, False))
            if len(near):
                self.known = near
        self.foreground = np.argwhere((self.weight > 0) & (self.target > 0))
        self.fraction, self.rng = foreground_fraction, rng

    def sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pool = self.foreground if len(self.foreground) and self.rng.random() < self.fraction else self.known
        centre = pool[self.rng.integers(len(pool))]
        # The known voxel may fall anywhere in the patch: the network must not learn that labels
        # sit at the patch centre, since at inference every plane of a window is predicted.
        jitter = self.rng.integers(-(self.patch // 2) + 1, self.patch // 2)
        shape = np.array(self.target.shape)
        start = np.clip(centre - self.patch // 2 + jitter, 0, shape - self.patch)
        box = tuple(slice(int(a), int(a + n)) for a, n in zip(start, self.patch))
        return self.image[(slice(None), *box)], self.target[box], self.weight[box]


def _augment(image: np.ndarray, target: np.ndarray, weight: np.ndarray, rng: np.random.Generator):
    """Intensity jitter (contrast, brightness, gamma, noise) and mirror flips across the two
    non-left-right axes. With a handful of slices a network can memorise noise patterns;
    these keep it learning appearance instead."""
    image = np.clip(image, 0.0, None) ** rng.uniform(0.7, 1.4)
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-0.1, 0.1)
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.05), image.shape)
    for axis in (0, 1):  # k and j; i is left-right, handled by flip_left_right with class swapping
        if rng.random() < 0.5:
            image, target, weight = np.flip(image, axis + 1), np.flip(target, axis), np.flip(weight, axis)
    return image.astype(np.float32), np.ascontiguousarray(target), np.ascontiguousarray(weight)


def _choose_held_out(annotation: SparseAnnotation) -> SliceRef | None:
    """A middle slice of the most-used axis whose removal leaves every class in the training slices."""
    if len(annotation.slices) < 3:
        return None
    axes = [ref.axis for ref in annotation.slices]
    axis = max(set(axes), key=axes.count)
    along = sorted((ref for ref in annotation.slices if ref.axis == axis), key=lambda ref: ref.index)
    if len(along) < 3:
        return None
    middle_first = sorted(along[1:-1], key=lambda ref: abs(along.index(ref) - len(along) // 2))
    for candidate in middle_first:
        rest = annotation.without(candidate)
        if set(np.unique(rest.labels[rest.known]).tolist()) >= set(annotation.classes):
            return candidate
    return None


def fine_tune(
    image: sitk.Image,
    annotation: SparseAnnotation,
    class_info: Sequence[LabelInfo],
    settings: FineTuneSettings | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    name: str = "sparse",
) -> FineTuneResult:
    """Train on ``annotation`` and predict the whole of ``image``."""
    settings = settings or FineTuneSettings()
    cancel = cancel or CancelToken()
    start = time.perf_counter()
    device = resolve_device(settings.device)
    budget = settings.time_budget or (30.0 if device.type == "cuda" else 150.0)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)

    info_by_value = {label.value: label for label in class_info}
    missing = [value for value in annotation.classes if value not in info_by_value]
    if missing:
        raise InputError(f"annotation label value(s) {missing} have no segment name/colour")
    classes = [info_by_value[value] for value in annotation.classes]
    base = ModelRegistry().find(settings.base_model) if settings.base_model else None
    if settings.patch_size is None:
        settings = replace(settings, patch_size=tuple(base.window_size) if base else (64, 64, 64))
    card = _card_for(image, base, classes, settings, name)
    network, reused = _build_network(base, classes, settings, device)

    # Labels travel as values, with UNKNOWN where nobody labelled; no resampling, only reorientation.
    channel_of = np.zeros(UNKNOWN + 1, dtype=np.int64)
    for index, label in enumerate(classes, start=1):
        channel_of[label.value] = index
    encoded = np.where(annotation.known, annotation.labels, UNKNOWN).astype(np.uint16)
    labels_image = sitk.GetImageFromArray(encoded)
    labels_image.CopyInformation(image)
    held_out = _choose_held_out(annotation) if settings.hold_out else None
    train_annotation = annotation.without(held_out) if held_out else annotation
    case = prepare_case(image, card, labels=labels_image, crop=False)
    known = case.labels != UNKNOWN
    target = channel_of[np.where(known, case.labels, 0)]
    oriented_train = _oriented_known(train_annotation, image, card)
    weight = oriented_train.astype(np.float32)
    validation = known & ~oriented_train if held_out else None  # the held-out slice's voxels

    patch = tuple(settings.patch_size[::-1])
    boxes = class_boxes(target, weight > 0, range(1, card.num_classes))
    focus = union_mask(target.shape, boxes.values()) if settings.use_annotation_priors else None
    sampler = _PatchSampler(case.image, target, weight, patch, settings.foreground_fraction, rng, focus)
    windows = count_windows(case.image.shape[1:], patch, 0.25)
    loss_function = build_loss(settings.loss)
    lr = settings.learning_rate or (3e-4 if base else 1e-3)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-5)
    permutation = card.channel_swap_for_lr_flip()

    setup_seconds = time.perf_counter() - start
    losses: list[float] = []
    best_dice, best_state, stale, step = -1.0, None, 0, 0
    stopped = "step limit"
    network.train()
    while step < settings.max_steps:
        if cancel.cancelled:
            cancel.raise_if_cancelled()
        elapsed = time.perf_counter() - start
        # Leave time for the whole-volume prediction: a window's forward pass costs about a third
        # of a training step per patch.
        step_seconds = (elapsed - setup_seconds) / step if step else 0.0
        if elapsed + windows * step_seconds / (3 * settings.batch_size) > budget:
            stopped = "time budget"
            break
        batch = [sampler.sample() for _ in range(settings.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*batch))
        if settings.flip_left_right and rng.random() < 0.5:
            flipped = flip_left_right({"image": images, "label": targets[:, None], "weight": weights[:, None]},
                                      permutation, axis=2)
            images, targets, weights = flipped["image"], flipped["label"][:, 0], flipped["weight"][:, 0]
        images, targets, weights = (np.stack(parts) for parts in zip(*(
            _augment(x, t, w, rng) for x, t, w in zip(images, targets, weights))))
        x = torch.from_numpy(images).to(device)
        y = torch.from_numpy(np.ascontiguousarray(targets)).long().to(device)
        w = torch.from_numpy(np.ascontiguousarray(weights)).float().to(device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            output = network(x)
        loss = loss_function(output, y, w)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        remaining = max(0.0, budget - (time.perf_counter() - start))
        progress(min(0.9 * max(step / settings.max_steps, (budget - remaining) / budget), 0.9),
                 f"step {step}, loss {np.mean(losses[-10:]):.3f}, ~{remaining:.0f} s left")
        if validation is not None and step % settings.validate_every == 0:
            dice = _held_out_dice(network, case.image, target, validation, card, device)
            network.train()
            if dice > best_dice + 1e-4:
                best_dice, best_state, stale = dice, copy.deepcopy(network.state_dict()), 0
            else:
                stale += 1
                if stale >= settings.patience:
                    stopped = "held-out Dice stopped improving"
                    break
    if step == 0:
        raise InputError(f"time budget of {budget:.0f} s ended before the first training step")
    if validation is not None:
        final = _held_out_dice(network, case.image, target, validation, card, device)
        if final >= best_dice or best_state is None:
            best_dice = final
        else:
            network.load_state_dict(best_state)
    network.eval()
    cancel.raise_if_cancelled()
    progress(0.9, "predicting the whole volume")
    card.training = {
        "mode": "sparse fine-tuning" if base else "sparse, from scratch",
        "base_model": f"{base.name} {base.version}" if base else None,
        "reused_classes": reused,
        "annotated_slices": [str(ref) for ref in annotation.slices],
        "labelled_voxels": int(annotation.known.sum()),
        "held_out_slice": str(held_out) if held_out else None,
        "held_out_dice": round(best_dice, 4) if held_out else None,
        "steps": step,
        "seconds": round(time.perf_counter() - start, 1),
        "stopped_because": stopped,
        "device": str(device),
        "seed": settings.seed,
        "medseg_version": __version__,
    }
    segmenter = Segmenter(card, str(device), network=network)
    dense = segmenter(image, InferenceOptions(device=str(device), uncertainty=True, overlap=0.25),
                      progress=lambda f, m: progress(0.9 + 0.1 * f, m), cancel=cancel)
    if settings.use_annotation_priors:
        dense.labels = apply_annotation_priors(dense.labels, annotation)
    uncertainty = sitk.GetArrayFromImage(dense.uncertainty)
    structures = np.maximum(sitk.GetArrayViewFromImage(dense.labels), np.where(annotation.known, annotation.labels, 0))
    return FineTuneResult(
        card=card, network=network, labels=dense.labels, uncertainty=dense.uncertainty, held_out=held_out,
        held_out_dice=best_dice if held_out else None, steps=step, seconds=time.perf_counter() - start,
        stopped_because=stopped, losses=losses,
        suggestions=suggest_slices(uncertainty, annotation.slices, settings.suggestions,
                                   region=structure_region(structures)),
        reused_classes=reused,
    )


def apply_annotation_priors(labels: sitk.Image, annotation: SparseAnnotation) -> sitk.Image:
    """The prediction with each class confined to its box and to pieces touching its labelled voxels."""
    array = sitk.GetArrayFromImage(labels)
    boxes = class_boxes(annotation.labels, annotation.known, annotation.classes)
    array = restrict_to_boxes(array, boxes)
    array = keep_annotated_components(array, annotation.labels, annotation.known, annotation.classes)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(labels)
    return result


def _oriented_known(annotation: SparseAnnotation, image: sitk.Image, card: ModelCard) -> np.ndarray:
    mask = sitk.GetImageFromArray(annotation.known.astype(np.uint8))
    mask.CopyInformation(image)
    return sitk.GetArrayFromImage(reorient(mask, card.orientation)) > 0


def _held_out_dice(network: UNet3D, image: np.ndarray, target: np.ndarray, validation: np.ndarray,
                   card: ModelCard, device: torch.device) -> float:
    """Mean Dice over the classes on the held-out voxels, predicting only a slab around them."""
    network.eval()
    box = _slab_around(validation, card.window_size[::-1])
    probabilities = sliding_window_probabilities(
        network, image[(slice(None), *box)], WindowSettings(tuple(card.window_size[::-1]), overlap=0.25), device
    )
    prediction = np.argmax(probabilities, axis=0)
    mask = validation[box]
    reference = target[box][mask]
    predicted = prediction[mask]
    classes = range(1, card.num_classes)
    return float(np.mean([overlap_metrics(predicted == c, reference == c).dice for c in classes]))


def _slab_around(mask: np.ndarray, window: Sequence[int]) -> tuple[slice, ...]:
    present = np.argwhere(mask)
    low, high = present.min(axis=0), present.max(axis=0) + 1
    box = []
    for axis, (a, b) in enumerate(zip(low, high)):
        size = mask.shape[axis]
        if b - a < window[axis]:
            centre = (a + b) // 2
            a = max(0, min(centre - window[axis] // 2, size - window[axis]))
            b = min(size, a + window[axis])
        box.append(slice(int(a), int(b)))
    return tuple(box)


def save_finetuned(result: FineTuneResult, name: str, registry: ModelRegistry | None = None) -> ModelCard:
    """Save as a user model: ``name``, then ``name-v2``, ``name-v3``… never overwriting a version."""
    folder, version = next_user_model_folder(name, registry)
    card = copy.deepcopy(result.card)
    card.name, card.version = name, str(version)
    return save_model(card, result.network, folder)
