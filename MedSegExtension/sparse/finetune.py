"""Fine-tune (or train from scratch) a 3D U-Net on one volume's sparse labels, then densify it.

The loss sees only known voxels (weight 1); every other voxel has weight 0 and contributes
nothing, to the loss or to its gradient (Çiçek et al. 2016). Patches are centred on known
voxels, half of them on a labelled structure. Training stops at the time budget, at the step
limit, on cancel, or when the held-out slice's Dice stops improving; the best state by
held-out Dice is kept.

Working grid: from a base model, the base model's spacing, the scale its features were learnt at
(at another scale a pretrained network starts from worse than its zero-shot prediction); from
scratch, the image's own voxels, reoriented but never resampled. On a coarser grid a coarse
voxel's weight says how close labelled voxels come to its centre (1 on them, 0 a coarse spacing
away) and its target is the nearest class, so a one-voxel-thick slice counts on the coarse
planes it passes through (see ``grid_coverage``).

With at least three slices one is held out to measure Dice and to stop early; it then rejoins
the training set for a short final phase, so no annotation is wasted. The dense prediction keeps
the user's own labels on the annotated voxels.
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
from ..io.volumes import same_geometry
from ..metrics.overlap import overlap_metrics
from ..models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
from ..models.registry import ModelRegistry, load_network, next_user_model_folder, save_model
from ..networks import UNet3D, build_network
from ..preprocessing import prepare_case, reorient
from ..preprocessing.spatial import resample_onto
from ..progress import CancelToken, ProgressCallback, no_progress
from ..training.augmentation import flip_left_right
from ..training.losses import build_loss
from .annotations import SliceRef, SparseAnnotation
from .class_names import left_right_pairs, matching_class
from .priors import class_boxes, keep_annotated_components, restrict_to_boxes, union_mask
from .suggest import structure_region, suggest_slices


@dataclass
class FineTuneSettings:
    base_model: str | None = None  # name or folder; None trains from scratch
    time_budget: float | None = None  # seconds; default 150 on the CPU, 30 on a GPU
    max_steps: int = 3000
    device: str = "auto"
    seed: int = 0
    patch_size: tuple[int, int, int] | None = None  # (i, j, k); default: the base model's window, else 48³
    working_spacing: str = "auto"  # "base" (the base model's), "native" (the image's); auto: base if any
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
    # Output head: background and each class that names a base class's structure start from that
    # class's channel (see class_names.py: "Caudate_L" matches "Left caudate nucleus").
    base_channel = {label.value: index + 1 for index, label in enumerate(base.labels)}
    heads = [(network.head, source.head)] + list(zip(network.aux_heads, source.aux_heads))
    with torch.no_grad():
        for new_head, old_head in heads:
            new_conv, old_conv = new_head.conv.conv, old_head.conv.conv
            new_conv.weight[0] = old_conv.weight[0]
            new_conv.bias[0] = old_conv.bias[0]
            for index, label in enumerate(classes, start=1):
                match = matching_class(label.name, base.labels)
                if match is not None:
                    channel = base_channel[match.value]
                    new_conv.weight[index] = old_conv.weight[channel]
                    new_conv.bias[index] = old_conv.bias[channel]
                    if new_head is network.head:
                        reused.append(label.name)
    return network.to(device), reused


def _working_spacing(image: sitk.Image, base: ModelCard | None, settings: FineTuneSettings) -> tuple[float, ...]:
    """The spacing the network trains and predicts at (see the module docstring)."""
    choice = settings.working_spacing
    if choice not in ("auto", "base", "native"):
        raise InputError(f"working spacing must be auto, base or native, not {choice!r}")
    if base is not None and choice in ("auto", "base"):
        return tuple(float(s) for s in base.target_spacing)
    if choice == "base":
        raise InputError("working spacing 'base' needs a base model")
    orientation = base.orientation if base else "LPS"
    # The spacing of the image as the network sees it (reoriented), so preprocessing never resamples.
    return tuple(round(s, 6) for s in reorient(image, orientation).GetSpacing())


def _card_for(image: sitk.Image, base: ModelCard | None, classes: Sequence[LabelInfo], settings: FineTuneSettings,
              name: str) -> ModelCard:
    orientation = base.orientation if base else "LPS"
    spacing = _working_spacing(image, base, settings)
    pairs = left_right_pairs(classes)
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


def _slice_classes(annotation: SparseAnnotation, ref: SliceRef) -> set[int]:
    index = [slice(None)] * 3
    index[ref.array_axis] = ref.index
    plane = tuple(index)
    return set(np.unique(annotation.labels[plane][annotation.known[plane]]).tolist()) - {0}


def _choose_held_out(annotation: SparseAnnotation) -> SliceRef | None:
    """A middle slice of the most-used axis whose every class is also on two or more other slices.

    Holding out a structure's second slice would leave it one to learn from: the check would cost
    more than it tells (with several structures, few slices each, that is the common case).
    """
    if len(annotation.slices) < 3:
        return None
    axes = [ref.axis for ref in annotation.slices]
    axis = max(set(axes), key=axes.count)
    along = sorted((ref for ref in annotation.slices if ref.axis == axis), key=lambda ref: ref.index)
    if len(along) < 3:
        return None
    classes_on = {ref: _slice_classes(annotation, ref) for ref in annotation.slices}
    middle_first = sorted(along[1:-1], key=lambda ref: abs(along.index(ref) - len(along) // 2))
    for candidate in middle_first:
        others = [classes_on[ref] for ref in annotation.slices if ref != candidate]
        if classes_on[candidate] and all(sum(value in other for other in others) >= 2
                                         for value in classes_on[candidate]):
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
        settings = replace(settings, patch_size=tuple(base.window_size) if base else (48, 48, 48))
    card = _card_for(image, base, classes, settings, name)
    network, reused = _build_network(base, classes, settings, device)

    held_out = _choose_held_out(annotation) if settings.hold_out else None
    case = prepare_case(image, card, crop=False)
    values = [label.value for label in classes]
    full = sparse_targets(annotation, image, case.model_grid, values, card.orientation)
    train, validation = full, None
    if held_out is not None:
        # Train on the other slices' own targets: on a coarse grid the held-out slice's reach may
        # overlap theirs, and its labels must not leak into training before they are scored.
        train = sparse_targets(annotation.without(held_out), image, case.model_grid, values, card.orientation)
        held = grid_coverage(annotation.known & ~annotation.without(held_out).known, image, case.model_grid,
                             card.orientation)
        validation = (held >= 0.5) & (held > train[1])  # voxels the held-out slice dominates
        if not validation.any():
            validation, train, held_out = None, full, None

    patch = tuple(settings.patch_size[::-1])
    boxes = class_boxes(full[0], full[1] > 0, range(1, card.num_classes))
    focus = union_mask(full[0].shape, boxes.values()) if settings.use_annotation_priors else None

    def sampler_for(targets: tuple[np.ndarray, np.ndarray]) -> _PatchSampler:
        return _PatchSampler(case.image, targets[0], targets[1], patch, settings.foreground_fraction, rng, focus)

    sampler = sampler_for(train)
    windows = count_windows(case.image.shape[1:], patch, 0.25)
    loss_function = build_loss(settings.loss)
    lr = settings.learning_rate or (3e-4 if base else 1e-3)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-5)
    permutation = card.channel_swap_for_lr_flip()

    setup_seconds = time.perf_counter() - start
    losses: list[float] = []
    best_dice, best_state, best_step, stale, step = -1.0, None, 0, 0, 0
    final_phase_end: int | None = None  # step at which training ends once the held-out slice has rejoined
    stopped = "step limit"
    network.train()
    while step < settings.max_steps:
        if cancel.cancelled:
            cancel.raise_if_cancelled()
        elapsed = time.perf_counter() - start
        # Leave time for the whole-volume prediction: a window's forward pass costs about a third
        # of a training step per patch.
        step_seconds = (elapsed - setup_seconds) / step if step else 0.0
        training_time = budget - windows * step_seconds / (3 * settings.batch_size)
        if elapsed > training_time:
            stopped = "time budget"
            break
        if final_phase_end is not None and step >= final_phase_end:
            stopped = "held-out Dice stopped improving; final phase with all slices done"
            break
        if validation is not None and step and elapsed - setup_seconds > 0.7 * (training_time - setup_seconds):
            stale = settings.patience  # time to let the held-out slice rejoin
        if validation is not None and stale >= settings.patience:
            # The held-out slice has told us when to stop; now it joins the training set for a
            # short final phase from the best state.
            if best_state is not None:
                network.load_state_dict(best_state)
            sampler, validation = sampler_for(full), None
            final_phase_end = step + max(settings.validate_every, best_step // 2)
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
            dice = _held_out_dice(network, case.image, full[0], validation, card, device)
            network.train()
            if dice > best_dice + 1e-4:
                best_dice, best_state, best_step, stale = dice, copy.deepcopy(network.state_dict()), step, 0
            else:
                stale += 1
    if step == 0:
        raise InputError(f"time budget of {budget:.0f} s ended before the first training step")
    if validation is not None:  # the budget ended before the final phase: keep the best state seen
        final = _held_out_dice(network, case.image, full[0], validation, card, device)
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
    dense.labels = keep_annotated_labels(dense.labels, annotation)
    uncertainty = sitk.GetArrayFromImage(dense.uncertainty)
    structures = sitk.GetArrayViewFromImage(dense.labels)
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


def keep_annotated_labels(labels: sitk.Image, annotation: SparseAnnotation) -> sitk.Image:
    """The prediction with the user's own labels on every annotated voxel: what they drew stays drawn."""
    array = sitk.GetArrayFromImage(labels)
    array[annotation.known] = annotation.labels[annotation.known]
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(labels)
    return result


def grid_coverage(mask: np.ndarray, image: sitk.Image, grid: sitk.Image, orientation: str) -> np.ndarray:
    """How strongly the (k, j, i) ``mask`` on ``image``'s grid reaches each ``grid`` voxel, in [0, 1].

    On the image's own (reoriented) grid this is the mask itself. On a coarser grid each labelled
    voxel first spreads as a tent one coarse voxel wide (1 at the voxel, 0 a coarse spacing
    away; the maximum where tents overlap), then the coarse voxel centres sample that field. So
    a 1 mm slice on a 2 mm grid weighs 1 on a coarse plane through it, or 0.5 on the two planes
    either side of it; plain interpolation would drop every slice that falls between two planes.
    """
    source = sitk.GetImageFromArray(mask.astype(np.float32))
    source.CopyInformation(image)
    oriented = reorient(source, orientation)
    if same_geometry(oriented, grid, tolerance=1e-6):
        return sitk.GetArrayFromImage(oriented)
    field = sitk.GetArrayFromImage(oriented)
    ratios = np.array(grid.GetSpacing())[::-1] / np.array(oriented.GetSpacing())[::-1]
    for axis, ratio in enumerate(ratios):
        field = _tent_max_filter(field, axis, float(ratio))
    spread = sitk.GetImageFromArray(field)
    spread.CopyInformation(oriented)
    return np.clip(sitk.GetArrayFromImage(resample_onto(spread, grid, "linear")), 0.0, 1.0)


def _tent_max_filter(field: np.ndarray, axis: int, ratio: float) -> np.ndarray:
    """``max_n (1 - |n| / ratio) * field[x - n]`` along ``axis``: a labelled voxel's reach, ``ratio`` voxels wide."""
    if ratio <= 1.0:
        return field
    result = field.copy()
    reach = int(np.ceil(ratio)) - 1
    size = field.shape[axis]
    for offset in range(1, reach + 1):
        factor = 1.0 - offset / ratio
        if offset >= size:
            break
        ahead = [slice(None)] * field.ndim
        behind = [slice(None)] * field.ndim
        ahead[axis], behind[axis] = slice(offset, None), slice(None, -offset)
        np.maximum(result[tuple(ahead)], factor * field[tuple(behind)], out=result[tuple(ahead)])
        np.maximum(result[tuple(behind)], factor * field[tuple(ahead)], out=result[tuple(behind)])
    return result


def sparse_targets(annotation: SparseAnnotation, image: sitk.Image, grid: sitk.Image, values: Sequence[int],
                   orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Channel targets (0 = background, n = ``values[n - 1]``) and loss weights on ``grid``.

    Weight is the labelled voxels' coverage (0 where nobody labelled); the target is the class
    (or background) covering most of the voxel.
    """
    weight = grid_coverage(annotation.known, image, grid, orientation)
    cover = [grid_coverage(annotation.known & (annotation.labels == value), image, grid, orientation)
             for value in (0, *values)]
    target = np.argmax(np.stack(cover), axis=0).astype(np.int64)
    target[weight == 0] = 0
    return target, weight.astype(np.float32)


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
