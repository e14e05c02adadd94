"""Training cases: checked before training, prepared like inference does, and sampled as patches.

Loading has two passes. :func:`check_cases` reads only image headers and the label maps and
lists every problem (missing files, geometry mismatch, label values the card does not know,
empty label maps, wrong channel count), one line each, so a user fixes them all at once
before any time is spent. :func:`prepare_cases` then runs the card's preprocessing
(:func:`MedSegExtension.preprocessing.prepare_case`: orientation, spacing, crop,
normalization) and turns label values into channel indices.

Batches are a function of (seed, rank, step) only (:class:`PatchBatches`): any number of
loader workers, a resumed run and an uninterrupted run all see the same patches.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import InputError
from ..io.quiet import first_line
from ..io.volumes import check_volume, read_image, squeeze_to_3d
from ..models.card import ModelCard, Normalization
from ..progress import CancelToken, ProgressCallback, no_progress
from .augmentation import AugmentationConfig, Augmenter, context_size
from .config import CaseSpec, DataConfig
from .sampling import PatchSampler, class_locations, crop, valid_mask


@dataclass
class TrainingCase:
    """One prepared case on the model grid (array order k, j, i)."""

    name: str
    labels: np.ndarray  # (k, j, i) channel indices
    image: np.ndarray | None = None  # (C, k, j, i) float32; None for a synthesis case
    source_labels: np.ndarray | None = None  # label values before mapping: what a synthesizer sees
    weight: np.ndarray | None = None  # (k, j, i) float32 per-voxel loss weight, or None for all ones
    synthesize: bool = False
    locations: dict[int, np.ndarray] = field(default_factory=dict, repr=False)
    pad_values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.locations:
            labelled = self.labels if self.weight is None else np.where(self.weight > 0, self.labels, 0)
            self.locations = class_locations(labelled)
            if self.weight is not None:  # sparse labels: background patches go where background is labelled
                background = np.argwhere((self.weight > 0) & (self.labels == 0))
                if len(background):
                    step = max(1, len(background) // 20000)
                    self.locations[0] = background[::step].astype(np.int32)
        if self.image is not None and not self.pad_values:
            self.pad_values = tuple(float(channel.min()) for channel in self.image)


# ---------------------------------------------------------------- checking


@dataclass(frozen=True)
class _Header:
    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]
    components: int


def _header(path: Path) -> _Header:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        image = squeeze_to_3d(read_image(path))
        return _Header(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                       image.GetNumberOfComponentsPerPixel())
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(f"{path}: cannot read image ({first_line(exc)})") from None
    size, dim = reader.GetSize(), reader.GetDimension()
    if dim == 4 and size[3] == 1:
        dim = 3
    if dim != 3:
        raise InputError(f"{path}: expected a 3D volume, got {reader.GetDimension()}D of size {size}")
    direction = tuple(reader.GetDirection())
    if len(direction) == 16:
        direction = direction[0:3] + direction[4:7] + direction[8:11]
    return _Header(tuple(size[:3]), tuple(reader.GetSpacing()[:3]), tuple(reader.GetOrigin()[:3]), direction,
                   reader.GetNumberOfComponents())


def _same_grid(a: _Header, b: _Header, tolerance: float = 1e-4) -> bool:
    scale = tolerance * max(1.0, *map(abs, a.origin))
    return (a.size == b.size and np.allclose(a.origin, b.origin, atol=scale)
            and np.allclose(a.spacing, b.spacing, rtol=tolerance) and np.allclose(a.direction, b.direction, atol=tolerance))


def _grid_text(h: _Header) -> str:
    return f"size {h.size}, spacing {tuple(round(s, 4) for s in h.spacing)}"


def read_label_map(path: Path) -> sitk.Image:
    """A 3D label map, checked to hold integers."""
    image = squeeze_to_3d(read_image(path))
    check_volume(image, str(path), allow_constant=True)
    if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
        array = sitk.GetArrayViewFromImage(image)
        if not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: label map holds non-integer values (is it an image rather than labels?)")
    return image


def value_lookup(values: Sequence[int], card: ModelCard, data: DataConfig, source: str) -> dict[int, int]:
    """Channel index for each label value found in a file, after ``data.label_map``."""
    channel_of = {label.value: index + 1 for index, label in enumerate(card.labels)}
    lookup, unknown = {}, []
    for value in values:
        value = int(value)
        mapped = data.label_map.get(value, value)
        if mapped == 0:
            lookup[value] = 0
        elif mapped in channel_of:
            lookup[value] = channel_of[mapped]
        elif data.unknown_labels == "background":
            lookup[value] = 0
        else:
            unknown.append(value)
    if unknown:
        known = ", ".join(str(v) for v in sorted(channel_of))
        raise InputError(f"{source}: label values {', '.join(map(str, unknown))} are not labels of model "
                         f"{card.name!r} (known: {known}); map them with data.label_map or set "
                         f"data.unknown_labels: background")
    return lookup


def _check_case(case: CaseSpec, card: ModelCard, data: DataConfig) -> list[str]:
    problems = []
    try:
        label_header = _header(case.label)
    except InputError as exc:
        return [str(exc)]
    if not case.synthesize:
        if len(case.images) != card.input_channels:
            problems.append(f"{case.images[0] if case.images else case.label}: case {case.name!r} has "
                            f"{len(case.images)} image file(s) but model {card.name!r} takes {card.input_channels}")
        for path in case.images:
            try:
                header = _header(path)
            except InputError as exc:
                problems.append(str(exc))
                continue
            if header.components != 1:
                problems.append(f"{path}: expected one value per voxel, got {header.components} components")
            elif not _same_grid(header, label_header):
                problems.append(f"{case.label}: geometry differs from {path} ({_grid_text(label_header)} vs "
                                f"{_grid_text(header)}, or origin or direction)")
    if case.weight is not None:
        try:
            if not _same_grid(_header(case.weight), label_header):
                problems.append(f"{case.weight}: weight map geometry differs from {case.label}")
        except InputError as exc:
            problems.append(str(exc))
    try:
        array = sitk.GetArrayFromImage(read_label_map(case.label))
        values = [int(v) for v in np.unique(array)]
        lookup = value_lookup(values, card, data, str(case.label))
        if not any(lookup[v] for v in values):
            problems.append(f"{case.label}: label map is empty (no voxel has a label of model {card.name!r})")
    except InputError as exc:
        problems.append(str(exc))
    return problems


def check_cases(cases: Sequence[CaseSpec], card: ModelCard, data: DataConfig,
                cancel: CancelToken | None = None) -> list[str]:
    """Every problem with these cases, one line each (empty when all is well)."""
    problems = []
    names: dict[str, CaseSpec] = {}
    for case in cases:
        if cancel is not None:
            cancel.raise_if_cancelled()
        problems += _check_case(case, card, data)
        if case.name in names and names[case.name].label != case.label:
            problems.append(f"{case.label}: case name {case.name!r} is used twice (also {names[case.name].label})")
        names[case.name] = case
    return problems


# ---------------------------------------------------------------- preparing


def _normalize_synthetic(array: np.ndarray, card: ModelCard) -> np.ndarray:
    """Synthetic intensities have no physical unit: a CT window is meaningless, so use percentiles then."""
    from ..preprocessing import normalize

    spec = card.normalization
    if spec.kind in ("window", "none"):
        spec = Normalization("percentile", 0.5, 99.5)
    return normalize(array, spec)


def make_synthesizer(data: DataConfig, card: ModelCard, seed: int) -> Any:
    """The SynthSeg-style synthesizer for synthesis cases (imported only when needed).

    The label arrays it receives are on the model grid, so its ``spacing`` defaults to the
    card's ``target_spacing``.
    """
    try:
        from .synthesis import LabelToImageSynthesizer
    except ImportError as exc:
        raise InputError(f"data.synthesize needs MedSegExtension.training.synthesis ({exc})") from None
    settings = {"spacing": list(card.target_spacing), **(data.synthesis or {})}
    return LabelToImageSynthesizer(settings, seed=seed)


def synthesize_image(synthesizer: Any, source_labels: np.ndarray, card: ModelCard,
                     rng: np.random.Generator) -> np.ndarray:
    """(C, k, j, i) float32: one synthetic contrast per input channel, normalized like the card says."""
    labels = np.ascontiguousarray(source_labels, dtype=np.int32)
    channels = [_normalize_synthetic(np.asarray(synthesizer(labels, rng), dtype=np.float32), card)
                for _ in range(card.input_channels)]
    return np.stack(channels).astype(np.float32)


def _apply_lookup(array: np.ndarray, lookup: dict[int, int], dtype: type) -> np.ndarray:
    values, inverse = np.unique(array, return_inverse=True)
    table = np.array([lookup.get(int(v), 0) for v in values], dtype=dtype)
    return table[inverse].reshape(array.shape)


def prepare_one(case: CaseSpec, card: ModelCard, data: DataConfig, synthesizer: Any = None,
                synth_seed: int = 0) -> TrainingCase:
    """Read and preprocess one checked case onto the model grid."""
    from ..io.volumes import read_volume
    from ..preprocessing import prepare_case
    from ..preprocessing.spatial import reorient, resample_onto, resample_to_spacing

    label_image = read_label_map(case.label)
    if label_image.GetPixelID() not in (sitk.sitkUInt8, sitk.sitkUInt16, sitk.sitkInt16, sitk.sitkInt32,
                                        sitk.sitkUInt32, sitk.sitkInt8):
        label_image = sitk.Cast(sitk.Round(label_image) if label_image.GetPixelID() in (
            sitk.sitkFloat32, sitk.sitkFloat64) else label_image, sitk.sitkInt32)
    values = [int(v) for v in np.unique(sitk.GetArrayViewFromImage(label_image))]
    lookup = value_lookup(values, card, data, str(case.label))
    dtype = np.uint8 if card.num_classes < 256 else np.int16
    image = None
    if case.synthesize:
        grid = resample_to_spacing(reorient(label_image, card.orientation), card.target_spacing, "nearest")
        source = sitk.GetArrayFromImage(grid)
        box: tuple[slice, ...] = tuple(slice(0, n) for n in source.shape)
    else:
        images = [squeeze_to_3d(read_volume(path)) for path in case.images]
        prepared = prepare_case(images, card, labels=label_image)
        image, source, grid, box = prepared.image, prepared.labels, prepared.model_grid, prepared.crop
    weight = None
    if case.weight is not None:
        weight_image = sitk.Cast(squeeze_to_3d(read_image(case.weight)), sitk.sitkFloat32)
        weight_grid = resample_onto(reorient(weight_image, card.orientation), grid, "nearest")
        weight = np.clip(sitk.GetArrayFromImage(weight_grid)[tuple(box)], 0, None).astype(np.float32)
    labels = _apply_lookup(source, lookup, dtype)
    if case.synthesize and synthesizer is not None:  # validation: one fixed synthetic image
        image = synthesize_image(synthesizer, source, card, np.random.default_rng(synth_seed))
    return TrainingCase(case.name, labels, image, source.astype(np.int32) if case.synthesize else None, weight,
                        case.synthesize and synthesizer is None)


def prepare_cases(cases: Sequence[CaseSpec], card: ModelCard, data: DataConfig, *,
                  progress: ProgressCallback = no_progress, cancel: CancelToken | None = None,
                  synthesizer_for_validation: Any = None, seed: int = 0, check: bool = True) -> list[TrainingCase]:
    """Check every case (all problems in one :class:`InputError`, one line each), then prepare them."""
    problems = check_cases(cases, card, data, cancel) if check else []
    if problems:
        raise InputError("\n".join(problems))
    prepared = []
    for index, case in enumerate(cases):
        if cancel is not None:
            cancel.raise_if_cancelled()
        progress(index / max(len(cases), 1), f"preparing {case.name}")
        prepared.append(prepare_one(case, card, data, synthesizer_for_validation, seed + index))
    progress(1.0, "cases ready")
    return prepared


def split_validation(cases: Sequence[CaseSpec], fraction: float, seed: int) -> tuple[list[CaseSpec], list[CaseSpec]]:
    """(train, validation): a seeded random ``fraction`` of the cases, at least one when there are two or more."""
    if fraction <= 0 or len(cases) < 2:
        return list(cases), []
    count = min(len(cases) - 1, max(1, round(fraction * len(cases))))
    order = np.random.default_rng(seed).permutation(len(cases))
    chosen = set(order[:count].tolist())
    return [c for i, c in enumerate(cases) if i not in chosen], [c for i, c in enumerate(cases) if i in chosen]


# ---------------------------------------------------------------- sampling


class PatchBatches(torch.utils.data.Dataset):
    """Item ``step`` is the whole batch of that step for this rank: a dict of tensors

    ``image`` (B, C, k, j, i) float32, ``target`` (B, k, j, i) int64 channel indices and
    ``weight`` (B, k, j, i) float32 (0 outside the volume and where the case's weight map is 0).
    """

    def __init__(self, cases: Sequence[TrainingCase], card: ModelCard, patch_size_kji: Sequence[int], batch_size: int,
                 *, foreground_fraction: float = 0.5, augmentation: AugmentationConfig | None = None,
                 seed: int = 0, rank: int = 0, steps: int = 1, synthesizer: Any = None) -> None:
        if not cases:
            raise InputError("no training cases left (all were used for validation?)")
        self.cases, self.card = list(cases), card
        self.patch_size = tuple(int(s) for s in patch_size_kji)
        self.batch_size, self.seed, self.rank, self.steps = batch_size, seed, rank, steps
        self.sampler = PatchSampler(foreground_fraction)
        self.augmentation = augmentation or AugmentationConfig(enabled=False)
        self.augmenter = Augmenter(self.augmentation, self.patch_size, card)
        self.context = context_size(self.patch_size, self.augmentation)
        self.synthesizer = synthesizer
        if any(c.synthesize for c in self.cases) and synthesizer is None:
            raise InputError("synthesis cases need a synthesizer (data.synthesize)")

    def __len__(self) -> int:
        return self.steps

    def sample(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented patch: ``image`` (C, k, j, i), ``label`` (1, k, j, i), ``weight`` (1, k, j, i)."""
        case = self.cases[int(rng.integers(len(self.cases)))]
        centre = self.sampler.centre(case.labels.shape, case.locations, rng)
        labels = crop(case.labels, centre, self.context, 0)
        weight = valid_mask(case.labels.shape, centre, self.context)
        if case.weight is not None:
            weight *= crop(case.weight, centre, self.context, 0.0)
        if case.synthesize:
            source = crop(case.source_labels, centre, self.context, 0)  # type: ignore[arg-type]
            image = synthesize_image(self.synthesizer, source, self.card, rng)
        else:
            assert case.image is not None
            image = np.stack([crop(channel, centre, self.context, pad)
                              for channel, pad in zip(case.image, case.pad_values, strict=False)])
        seed = int(rng.integers(2**32))
        return self.augmenter({"image": image, "label": labels[None].astype(np.float32), "weight": weight[None]}, seed)

    def __getitem__(self, step: int) -> dict[str, torch.Tensor]:
        samples = [self.sample(np.random.default_rng([self.seed, self.rank, int(step), b]))
                   for b in range(self.batch_size)]
        return {
            "image": torch.from_numpy(np.stack([s["image"] for s in samples]).astype(np.float32)),
            "target": torch.from_numpy(np.stack([s["label"][0] for s in samples]).astype(np.int64)),
            "weight": torch.from_numpy(np.stack([s["weight"][0] for s in samples]).astype(np.float32)),
        }


def _worker_init(_worker_id: int) -> None:
    torch.set_num_threads(1)


def iterate_batches(dataset: torch.utils.data.Dataset, start_step: int, steps: int, num_workers: int = 0,
                    pin_memory: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Batches for steps ``start_step .. steps-1`` in order, with ``num_workers`` loader processes."""
    if num_workers <= 0:
        for step in range(start_step, steps):
            yield dataset[step]
        return
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start_step, steps), num_workers=num_workers,
        pin_memory=pin_memory, worker_init_fn=_worker_init, prefetch_factor=2, persistent_workers=False,
    )
    iterator = iter(loader)
    try:
        yield from iterator
    finally:
        with contextlib.suppress(Exception):
            del iterator
