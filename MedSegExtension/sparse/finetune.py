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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk
import torch

from .. import __version__
from ..errors import InputError
from ..inference.devices import resolve_device
from ..inference.pipeline import (
    InferenceOptions,
    Segmenter,
    entropy_map,
    image_like,
    labels_from_probabilities,
)
from ..inference.sliding_window import count_windows
from ..models.card import LabelInfo, ModelCard, NetworkConfig, Normalization
from ..models.registry import ModelRegistry, load_network, save_user_model
from ..networks import UNet3D, build_network
from ..preprocessing import prepare_case, reorient
from ..progress import CancelToken, ProgressCallback, no_progress
from ..training.augmentation import flip_left_right
from ..training.losses import build_loss
from .annotations import SliceRef, SparseAnnotation
from .candidates import cheap_candidates
from .choice import NETWORK, choose, compose, first_answer, step_budget
from .class_names import left_right_pairs, matching_class
from .held_out import choose_held_out, held_out_class_dice
from .interpolation import fuse_with_interpolation, interpolation_held_out_dice
from .patches import PatchSampler, augment
from .priors import apply_annotation_priors, class_boxes, keep_annotated_labels, union_mask
from .suggest import structure_region, suggest_slices
from .targets import grid_coverage, sparse_targets


@dataclass
class FineTuneSettings:
    base_model: str | None = None  # name or folder; None trains from scratch
    time_budget: float | None = None  # a cap, in seconds; default 120 on the CPU, 30 on a GPU
    max_steps: int | None = None  # default: set by the problem (choice.step_budget), so load does not change it
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
    # A base model that knows none of the user's classes (by name, see class_names.py) is set aside
    # and training starts from scratch, unless this is True.
    use_unrelated_base: bool = False
    # Spatial priors from the annotation (see sparse/priors.py): each class stays near its labelled
    # voxels, in pieces that touch them.
    use_annotation_priors: bool = True
    # Average the network with shape interpolation between annotated parallel slices (interpolation.py),
    # unless interpolation scores below the network on the held-out slice.
    interpolate_between_slices: bool = True
    # Per structure, replace the network by region growing from the annotated voxels (growing.py) or
    # by interpolation where that predicts the held-out slice better (candidates.py, choice.py); they
    # also make the first answer, before any training.
    choose_per_structure: bool = True
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
    network_labels: sitk.Image  # the network's own dense prediction, before interpolation was fused in
    first_labels: sitk.Image | None = None  # the answer before training: the best cheap candidate per structure
    choices: dict[str, str] = field(default_factory=dict)  # structure -> network, region growing or interpolation
    first_choices: dict[str, str] = field(default_factory=dict)  # structure -> the first answer's candidate


def _build_network(
    base: ModelCard | None, classes: Sequence[LabelInfo], settings: FineTuneSettings, device: torch.device
) -> tuple[UNet3D, list[str]]:
    """A network for the user's classes; from a base model, matching classes keep their output channels."""
    if base is None:
        return build_network(1, 1 + len(classes), settings.network).to(device), []
    if base.input_channels != 1:
        raise InputError(f"base model {base.name!r} takes {base.input_channels} channels; sparse mode needs 1")
    if base.network.architecture != "unet3d" or base.network.recurrent_passes > 1:
        raise InputError(f"base model {base.name!r} is a {base.network.summary()} model; sparse mode starts from "
                         "a unet3d model (or use --from-scratch)")
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


def fine_tune(
    image: sitk.Image,
    annotation: SparseAnnotation,
    class_info: Sequence[LabelInfo],
    settings: FineTuneSettings | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    name: str = "sparse",
    on_first_answer: Callable[[sitk.Image], None] | None = None,
) -> FineTuneResult:
    """Train on ``annotation`` and predict the whole of ``image``; ``on_first_answer`` gets the answer
    made before training (the best cheap candidate per structure) as soon as it is ready."""
    settings = settings or FineTuneSettings()
    cancel = cancel or CancelToken()
    start = time.perf_counter()
    device = resolve_device(settings.device)
    budget = settings.time_budget or (30.0 if device.type == "cuda" else 120.0)
    rng = np.random.default_rng(settings.seed)
    torch.manual_seed(settings.seed)

    info_by_value = {label.value: label for label in class_info}
    missing = [value for value in annotation.classes if value not in info_by_value]
    if missing:
        raise InputError(f"annotation label value(s) {missing} have no segment name/colour")
    classes = [info_by_value[value] for value in annotation.classes]
    base = ModelRegistry().find(settings.base_model) if settings.base_model else None
    unrelated_base = None
    if base is not None and not settings.use_unrelated_base and not any(
            matching_class(label.name, base.labels) for label in classes):
        # Measured (benchmarks/results/sparse.md, MNI152 grey/white matter): fine-tuning the brain
        # model to structures it does not know scored 0.31 Dice where training from scratch on the
        # image's own voxels scored 0.89 in the same time.
        unrelated_base, base = f"{base.name} {base.version}", None
    if settings.patch_size is None:
        settings = replace(settings, patch_size=tuple(base.window_size) if base else (48, 48, 48))
    card = _card_for(image, base, classes, settings, name)
    network, reused = _build_network(base, classes, settings, device)

    if settings.max_steps is None:
        settings = replace(settings, max_steps=step_budget(len(classes)))
    held_out = choose_held_out(annotation) if settings.hold_out else None
    values = [label.value for label in classes]
    image_array = sitk.GetArrayFromImage(image)
    candidates, first, first_choices = None, None, {}
    if settings.choose_per_structure:
        candidates = cheap_candidates(image_array, annotation, image.GetSpacing(), values, held_out,
                                      progress=lambda f, m: progress(0.0, m), cancel=cancel)
        first_array, first_choices = first_answer(candidates, values)
        first = keep_annotated_labels(image_like(first_array, image), annotation)
        progress(0.0, "first answer ready: " + ", ".join(sorted(set(first_choices.values()))))
        if on_first_answer is not None:
            on_first_answer(first)
    case = prepare_case(image, card, crop=False)
    full = sparse_targets(annotation, image, case.model_grid, values, card.orientation)
    train, validation = full, None
    if held_out is not None:
        # Train on the other slices' own targets: on a coarse grid the held-out slice's reach may
        # overlap theirs, and its labels must not leak into training before they are scored.
        rest = annotation.without(held_out)
        train = sparse_targets(rest, image, case.model_grid, values, card.orientation)
        held = grid_coverage(annotation.known & ~rest.known, image, case.model_grid,
                             card.orientation)
        validation = (held >= 0.5) & (held > train[1])  # voxels the held-out slice dominates
        if not validation.any():
            validation, train, held_out = None, full, None

    patch = tuple(settings.patch_size[::-1])
    boxes = class_boxes(full[0], full[1] > 0, range(1, card.num_classes))
    focus = union_mask(full[0].shape, boxes.values()) if settings.use_annotation_priors else None

    def sampler_for(targets: tuple[np.ndarray, np.ndarray]) -> PatchSampler:
        return PatchSampler(case.image, targets[0], targets[1], patch, settings.foreground_fraction, rng, focus)

    sampler = sampler_for(train)
    windows = count_windows(case.image.shape[1:], patch, 0.25)
    loss_function = build_loss(settings.loss)
    lr = settings.learning_rate or (3e-4 if base else 1e-3)
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=1e-5)
    permutation = card.channel_swap_for_lr_flip()

    setup_seconds = time.perf_counter() - start
    losses: list[float] = []
    best_dice, best_state, best_step, stale, step = -1.0, None, 0, 0, 0
    best_classes: list[float] | None = None  # each class's held-out Dice at the best state
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
        if validation is not None and step and (step >= 0.7 * settings.max_steps
                                                or elapsed - setup_seconds > 0.7 * (training_time - setup_seconds)):
            stale = settings.patience  # time to let the held-out slice rejoin
        if validation is not None and stale >= settings.patience:
            # The held-out slice has told us when to stop; now it joins the training set for a
            # short final phase from the best state.
            if best_state is not None:
                network.load_state_dict(best_state)
            else:  # no validation yet (a short budget): measure the slice before it joins training
                best_classes = held_out_class_dice(network, case.image, full[0], validation, card, device)
                best_dice, best_step = float(np.mean(best_classes)), step
                network.train()
            sampler, validation = sampler_for(full), None
            final_phase_end = step + max(settings.validate_every, best_step // 2)
        batch = [sampler.sample() for _ in range(settings.batch_size)]
        images, targets, weights = (np.stack(parts) for parts in zip(*batch))
        if settings.flip_left_right and rng.random() < 0.5:
            flipped = flip_left_right({"image": images, "label": targets[:, None], "weight": weights[:, None]},
                                      permutation, axis=2)
            images, targets, weights = flipped["image"], flipped["label"][:, 0], flipped["weight"][:, 0]
        images, targets, weights = (np.stack(parts) for parts in zip(*(
            augment(x, t, w, rng) for x, t, w in zip(images, targets, weights))))
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
            per_class = held_out_class_dice(network, case.image, full[0], validation, card, device)
            dice = float(np.mean(per_class))
            network.train()
            if dice > best_dice + 1e-4:
                best_dice, best_state, best_step, stale = dice, copy.deepcopy(network.state_dict()), step, 0
                best_classes = per_class
            else:
                stale += 1
    if step == 0:
        raise InputError(f"time budget of {budget:.0f} s ended before the first training step")
    if validation is not None:  # the budget ended before the final phase: keep the best state seen
        final_classes = held_out_class_dice(network, case.image, full[0], validation, card, device)
        final = float(np.mean(final_classes))
        if final >= best_dice or best_state is None:
            best_dice, best_classes = final, final_classes
        else:
            network.load_state_dict(best_state)
    network.eval()
    cancel.raise_if_cancelled()
    progress(0.9, "predicting the whole volume")
    card.training = {
        "mode": "sparse fine-tuning" if base else "sparse, from scratch",
        "base_model": f"{base.name} {base.version}" if base else None,
        "unrelated_base_model_skipped": unrelated_base,
        "reused_classes": reused,
        "annotated_slices": [str(ref) for ref in annotation.slices],
        "labelled_voxels": int(annotation.known.sum()),
        "held_out_slice": str(held_out) if held_out else None,
        "held_out_dice": round(best_dice, 4) if held_out else None,
        "steps": step,
        "seconds": round(time.perf_counter() - start, 1),
        "stopped_because": stopped,
        "step_budget": settings.max_steps,
        "time_cap_seconds": budget,
        "device": str(device),
        "seed": settings.seed,
        "medseg_version": __version__,
    }
    segmenter = Segmenter(card, str(device), network=network)
    dense = segmenter(image, InferenceOptions(device=str(device), probabilities=True, overlap=0.25),
                      progress=lambda f, m: progress(0.9 + 0.1 * f, m), cancel=cancel)
    probabilities = np.moveaxis(sitk.GetArrayFromImage(dense.probabilities), -1, 0)
    network_labels = _finish_labels(probabilities, card, annotation, image, settings)
    labels = network_labels
    # Interpolation helps smooth structures between close slices and hurts folded ones between far
    # slices (cortex); the held-out slice, interpolated from its neighbours, tells which case this is.
    interpolation_dice = interpolation_held_out_dice(annotation, held_out, values, image.GetSpacing()) \
        if held_out is not None else None
    fuse = settings.interpolate_between_slices and (interpolation_dice is None or interpolation_dice >= best_dice)
    card.training["interpolation_held_out_dice"] = None if interpolation_dice is None else round(interpolation_dice, 4)
    card.training["interpolation_fused"] = bool(fuse)
    if fuse:
        probabilities = fuse_with_interpolation(probabilities, annotation, values, image.GetSpacing())
        labels = _finish_labels(probabilities, card, annotation, image, settings)
    choices = {value: NETWORK for value in values}
    names = {label.value: label.name for label in classes}
    if candidates is not None:
        network_dice = dict(zip(values, best_classes)) if held_out is not None and best_classes else {}
        known_to_base = {label.value for label in classes if label.name in reused}
        choices = choose(network_dice, candidates, values, known_to_base)
        if set(choices.values()) != {NETWORK}:
            array = compose(sitk.GetArrayFromImage(labels), candidates.labels, choices)
            labels = keep_annotated_labels(image_like(array, image), annotation)
        card.training["network_held_out_class_dice"] = {names[v]: round(d, 4) for v, d in network_dice.items()}
        card.training["candidate_held_out_dice"] = candidates.record(values, names)
    chosen = {names[value]: how for value, how in choices.items()}
    card.training["structure_choices"] = chosen
    card.training["first_answer_choices"] = {names[value]: how for value, how in first_choices.items()}
    uncertainty = entropy_map(probabilities)
    return FineTuneResult(
        card=card, network=network, labels=labels, uncertainty=image_like(uncertainty, image), held_out=held_out,
        held_out_dice=best_dice if held_out else None, steps=step, seconds=time.perf_counter() - start,
        stopped_because=stopped, losses=losses,
        suggestions=suggest_slices(uncertainty, annotation.slices, settings.suggestions,
                                   region=structure_region(sitk.GetArrayViewFromImage(labels))),
        reused_classes=reused, network_labels=network_labels,
        first_labels=first, choices=chosen,
        first_choices=card.training["first_answer_choices"],
    )


def _finish_labels(probabilities: np.ndarray, card: ModelCard, annotation: SparseAnnotation, image: sitk.Image,
                   settings: FineTuneSettings) -> sitk.Image:
    """Labels from probabilities, the annotation's priors applied and the annotated voxels kept."""
    labels = image_like(labels_from_probabilities(probabilities, card), image)
    if settings.use_annotation_priors:
        labels = apply_annotation_priors(labels, annotation)
    return keep_annotated_labels(labels, annotation)


def save_finetuned(result: FineTuneResult, name: str, registry: ModelRegistry | None = None) -> ModelCard:
    """Save as a user model: ``name``, then ``name-v2``, ``name-v3``… never overwriting a version."""
    return save_user_model(copy.deepcopy(result.card), result.network, name, registry)
