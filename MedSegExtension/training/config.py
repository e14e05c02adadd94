"""The training configuration: a YAML or JSON file with ``model``, ``data`` and ``training`` sections.

See ``docs/training.md`` for the reference. Relative paths are relative to the file that
names them (the config, or a list file). Every problem found is reported in one line that
names the config file and the key; unknown keys are errors (with a did-you-mean), because a
misspelt ``learning_rate`` silently ignored costs a user a day of GPU time.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError
from ..io.atomic import compound_suffix
from ..io.volumes import VOLUME_SUFFIXES
from ..models.card import ModelCard
from ..networks import network_problems
from .augmentation import AugmentationConfig
from .hard_negative import check_hard_negative
from .losses import build_loss
from .sample_quality import check_sample_weighting

# Keys that change how a run goes but not what it learns: left out of the config hash, so a
# resumed run may change them.
RUNTIME_KEYS = ("steps", "max_seconds", "max_cpu_seconds", "num_workers", "device", "val_every", "checkpoint_every",
                "early_stop_patience", "amp")
CARD_OUTPUT_KEYS = ("sha256", "training", "folder", "format_version")


@dataclass
class CaseSpec:
    """One training case: image file(s) (one per input channel), a label map, and its source."""

    name: str
    images: list[Path]
    label: Path
    synthesize: bool = False
    weight: Path | None = None  # optional per-voxel weight map (0 = ignore), same grid as the label

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "images": [str(p) for p in self.images], "label": str(self.label)}
        if self.synthesize:
            out["synthesize"] = True
        if self.weight is not None:
            out["weight"] = str(self.weight)
        return out


@dataclass
class DataConfig:
    cases: list[CaseSpec]
    val_cases: list[CaseSpec] = field(default_factory=list)
    val_fraction: float = 0.2
    label_map: dict[int, int] = field(default_factory=dict)
    unknown_labels: str = "error"  # or "background"
    synthesize: bool = False
    synthesis: dict[str, Any] | None = None


@dataclass
class TrainingConfig:
    steps: int = 1000
    batch_size: int = 2
    patch_size: tuple[int, int, int] | None = None  # (i, j, k) like window_size; default = window_size
    lr: float = 5e-4
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # or "sgd" (Nesterov, momentum 0.99)
    schedule: str = "poly"  # "poly", "cosine" or "constant"
    warmup_steps: int = 0
    grad_clip: float | None = 12.0
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "dice_ce"})
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    foreground_fraction: float = 0.5
    val_every: int = 250
    val_overlap: float = 0.25
    checkpoint_every: int | None = None  # default: val_every
    early_stop_patience: int | None = None  # validations without improvement before stopping
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: str | bool = "auto"  # bf16 autocast on CUDA
    max_seconds: float | None = None
    max_cpu_seconds: float | None = None  # CPU-time budget of this process (fair comparisons on a shared machine)
    init_from: str | None = None  # a model name or folder whose weights training starts from
    sample_weighting: str = "none"  # "qam" or "qam_ocm": noisy-label weighting of seed 002 (sample_quality.py)
    ocm_lambda: float = 2.0  # OCM bound λ (qam_ocm): weights differ by at most e^{2λ}
    qam_lr: float = 1e-4  # learning rate of the QAM (seed 002)
    hard_negative: dict[str, Any] | None = None  # {start_fraction, weight, kind}: seed 004's late loss (hard_negative.py)

    @property
    def patch_size_kji(self) -> tuple[int, int, int]:
        assert self.patch_size is not None
        return tuple(int(s) for s in reversed(self.patch_size))  # type: ignore[return-value]


@dataclass
class TrainConfig:
    card: ModelCard
    data: DataConfig
    training: TrainingConfig
    output: Path | None = None  # the model folder; default: <user models dir>/<name>
    checkpoint_dir: Path | None = None  # default: <output>/checkpoints
    source: str = "config"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def config_hash(self) -> str:
        """sha256 of what determines the result (runtime-only training keys left out)."""
        raw = copy.deepcopy(self.raw)
        for key in RUNTIME_KEYS:
            raw.get("training", {}).pop(key, None)
        raw.pop("output", None)
        raw.pop("checkpoint_dir", None)
        text = json.dumps(raw, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def _reject_unknown(section: dict[str, Any], allowed: list[str] | tuple[str, ...], where: str, source: str) -> None:
    for key in section:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(allowed)})"
            raise InputError(f"{source}: unknown key {where}{key}{hint}")


def _path(value: Any, base: Path) -> Path:
    path = Path(os.path.expandvars(os.path.expanduser(str(value))))
    return path if path.is_absolute() else base / path


def _stem(path: Path) -> str:
    suffix = compound_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _is_volume(path: Path) -> bool:
    return path.is_file() and compound_suffix(path) in VOLUME_SUFFIXES and not path.name.startswith(".")


def _case_from_entry(entry: Any, base: Path, index: int, default_synth: bool, where: str, source: str) -> CaseSpec:
    if isinstance(entry, (list, tuple)) and entry:
        entry = {"image": list(entry[:-1]), "label": entry[-1]}
    if not isinstance(entry, dict):
        raise InputError(f"{source}: {where}[{index}] must be a mapping with 'image' and 'label'")
    _reject_unknown(entry, ("name", "image", "label", "synthesize", "weight"), f"{where}[{index}].", source)
    synthesize = bool(entry.get("synthesize", default_synth))
    if "label" not in entry:
        raise InputError(f"{source}: {where}[{index}] has no 'label'")
    images_value = entry.get("image", [])
    images = [_path(v, base) for v in (images_value if isinstance(images_value, list) else [images_value])]
    if not images and not synthesize:
        raise InputError(f"{source}: {where}[{index}] has no 'image' (give one, or set synthesize: true)")
    label = _path(entry["label"], base)
    weight = _path(entry["weight"], base) if entry.get("weight") else None
    return CaseSpec(str(entry.get("name") or _stem(label)), images, label, synthesize, weight)


def cases_from_folder(folder: Path, synthesize: bool, source: str) -> list[CaseSpec]:
    """Pair ``images/`` (or ``imagesTr/``) with ``labels/`` (or ``labelsTr/``) by file name.

    ``labels/X.nii.gz`` pairs with ``images/X.nii.gz``, or with ``images/X_0000.nii.gz``,
    ``X_0001…`` (one file per input channel, the nnU-Net layout). A label without an image
    is a synthesis case when ``synthesize`` is on.
    """
    if not folder.is_dir():
        raise InputError(f"{source}: data folder {folder} does not exist")
    images_dir = next((folder / n for n in ("images", "imagesTr") if (folder / n).is_dir()), None)
    labels_dir = next((folder / n for n in ("labels", "labelsTr") if (folder / n).is_dir()), None)
    if labels_dir is None or (images_dir is None and not synthesize):
        raise InputError(f"{folder}: expected subfolders images/ and labels/ (or imagesTr/ and labelsTr/)")
    by_stem: dict[str, list[Path]] = {}
    for path in sorted(images_dir.iterdir()) if images_dir is not None else []:
        if _is_volume(path):
            stem = _stem(path)
            base = stem[:-5] if len(stem) > 5 and stem[-5] == "_" and stem[-4:].isdigit() else stem
            by_stem.setdefault(base, []).append(path)
    labels = [p for p in sorted(labels_dir.iterdir()) if _is_volume(p)]
    if not labels:
        raise InputError(f"{labels_dir}: no label files found")
    cases, problems = [], []
    for label in labels:
        stem = _stem(label)
        images = sorted(by_stem.pop(stem, []))
        if not images and not synthesize:
            problems.append(f"{label}: no matching image in {images_dir} (expected {stem}.* or {stem}_0000.*)")
            continue
        cases.append(CaseSpec(stem, images, label, synthesize))
    for stem, images in by_stem.items():
        problems.append(f"{images[0]}: no matching label file {labels_dir}/{stem}.*")
    if problems:
        raise InputError("\n".join(problems))
    return cases


def cases_from_list_file(path: Path, synthesize: bool, source: str) -> list[CaseSpec]:
    """One case per line: ``image [image2 …] label`` separated by tabs, commas or spaces.

    Blank lines and ``#`` comments are skipped, as is a header line ending in ``label``.
    With ``synthesize`` a line may hold the label alone. Paths are relative to the list file.
    """
    if not path.is_file():
        raise InputError(f"{source}: list file {path} does not exist")
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        separator = "\t" if "\t" in text else "," if "," in text else None
        fields = [f.strip() for f in text.split(separator) if f.strip()]
        if number == 1 and fields[-1].lower() in ("label", "labels", "segmentation", "mask"):
            continue
        if len(fields) < 2 and not synthesize:
            raise InputError(f"{path}:{number}: expected 'image label', got {text!r}")
        label = _path(fields[-1], path.parent)
        cases.append(CaseSpec(_stem(label), [_path(f, path.parent) for f in fields[:-1]], label, synthesize))
    if not cases:
        raise InputError(f"{path}: list file names no cases")
    return cases


def _collect_cases(section: dict[str, Any], prefix: str, base: Path, synthesize: bool, source: str) -> list[CaseSpec]:
    cases: list[CaseSpec] = []
    entries = section.get(f"{prefix}cases") or []
    if not isinstance(entries, list):
        raise InputError(f"{source}: data.{prefix}cases must be a list")
    for index, entry in enumerate(entries):
        cases.append(_case_from_entry(entry, base, index, synthesize, f"data.{prefix}cases", source))
    if section.get(f"{prefix}folder"):
        cases += cases_from_folder(_path(section[f"{prefix}folder"], base), synthesize, source)
    if section.get(f"{prefix}list_file"):
        cases += cases_from_list_file(_path(section[f"{prefix}list_file"], base), synthesize, source)
    return cases


def _dataclass_from(cls: type, values: dict[str, Any], where: str, source: str) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    _reject_unknown(values, names, where, source)
    converted = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if isinstance(value, list) and "tuple" in str(f.type):
            value = tuple(value)
        converted[f.name] = value
    try:
        return cls(**converted)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{source}: bad {where.rstrip('.')} ({exc})") from None


def _card_from(section: Any, first_case: CaseSpec | None, source: str) -> ModelCard:
    if not isinstance(section, dict):
        raise InputError(f"{source}: 'model' section is missing (it describes the model to train)")
    allowed = [f.name for f in dataclasses.fields(ModelCard) if f.name not in CARD_OUTPUT_KEYS]
    _reject_unknown(section, allowed, "model.", source)
    for key in ("name", "labels"):
        if key not in section:
            raise InputError(f"{source}: model.{key} is required")
    data = {"version": "0.1.0", "description": "", "modality": "any", **section}
    if "input_channels" not in data:
        data["input_channels"] = len(first_case.images) if first_case and first_case.images else 1
    card = ModelCard.from_dict(data, source=f"{source} (model section)")
    if any(sep in card.name for sep in ("/", "\\")) or card.name in ("", ".", ".."):
        raise InputError(f"{source}: model.name {card.name!r} cannot be a folder name")
    return card


def _positive(value: Any, name: str, source: str, integer: bool = True, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else isinstance(value, (int, float))
    if not ok or value <= 0:
        raise InputError(f"{source}: training.{name} must be a positive {'integer' if integer else 'number'}, got {value!r}")


def config_from_dict(raw: dict[str, Any], base_dir: str | Path = ".", source: str = "config") -> TrainConfig:
    """Build and check a :class:`TrainConfig` (paths relative to ``base_dir``); raises :class:`InputError`."""
    if not isinstance(raw, dict):
        raise InputError(f"{source}: expected a mapping with model, data and training sections")
    raw = copy.deepcopy(raw)
    base = Path(base_dir)
    _reject_unknown(raw, ("model", "data", "training", "output", "checkpoint_dir"), "", source)
    data_section = raw.get("data")
    if not isinstance(data_section, dict):
        raise InputError(f"{source}: 'data' section is missing (it lists the training cases)")
    _reject_unknown(data_section, ("cases", "folder", "list_file", "val_cases", "val_folder", "val_list_file",
                                   "val_fraction", "label_map", "unknown_labels", "synthesize", "synthesis"),
                    "data.", source)
    synthesize = bool(data_section.get("synthesize", False))
    cases = _collect_cases(data_section, "", base, synthesize, source)
    val_cases = _collect_cases(data_section, "val_", base, synthesize, source)
    if not cases:
        raise InputError(f"{source}: no training cases (give data.cases, data.folder or data.list_file)")
    try:
        label_map = {int(k): int(v) for k, v in (data_section.get("label_map") or {}).items()}
    except (TypeError, ValueError, AttributeError):
        raise InputError(f"{source}: data.label_map must map label values to label values, e.g. {{12: 5}}") from None
    unknown = str(data_section.get("unknown_labels", "error"))
    if unknown not in ("error", "background"):
        raise InputError(f"{source}: data.unknown_labels must be 'error' or 'background'")
    val_fraction = float(data_section.get("val_fraction", 0.2))
    if not 0 <= val_fraction < 1:
        raise InputError(f"{source}: data.val_fraction must be in [0, 1)")
    synthesis = data_section.get("synthesis")
    if synthesis is not None and not isinstance(synthesis, dict):
        raise InputError(f"{source}: data.synthesis must be a mapping of synthesizer settings")
    data = DataConfig(cases, val_cases, val_fraction, label_map, unknown, synthesize, synthesis)

    card = _card_from(raw.get("model"), cases[0], source)
    known_values = {label.value for label in card.labels}
    for src, dst in label_map.items():
        if dst != 0 and dst not in known_values:
            raise InputError(f"{source}: data.label_map sends {src} to {dst}, which is not a label value of the model")

    training_section = dict(raw.get("training") or {})
    augmentation = training_section.pop("augmentation", None)
    if augmentation is False:
        augmentation = {"enabled": False}
    training = _dataclass_from(TrainingConfig, training_section, "training.", source)
    if isinstance(training.loss, str):
        training.loss = {"name": training.loss}
    training.augmentation = _dataclass_from(AugmentationConfig, augmentation or {}, "training.augmentation.", source)
    if training.patch_size is None:
        training.patch_size = tuple(card.window_size)
    elif len(training.patch_size) != 3:
        raise InputError(f"{source}: training.patch_size must be three integers (i, j, k)")
    training.patch_size = tuple(int(s) for s in training.patch_size)
    problems = network_problems(card.network)
    if problems:  # the first: each later one may follow from it
        raise InputError(f"{source}: model.{problems[0]}")
    divisor = 2 ** (len(card.network.channels) - 1)
    if any(s % divisor or s < divisor for s in training.patch_size):
        raise InputError(f"{source}: training.patch_size {list(training.patch_size)} must be multiples of {divisor} "
                         f"for a {len(card.network.channels)}-level U-Net")
    for name in ("steps", "batch_size", "val_every"):
        _positive(getattr(training, name), name, source)
    _positive(training.checkpoint_every, "checkpoint_every", source, allow_none=True)
    _positive(training.early_stop_patience, "early_stop_patience", source, allow_none=True)
    _positive(training.lr, "lr", source, integer=False)
    _positive(training.max_seconds, "max_seconds", source, integer=False, allow_none=True)
    _positive(training.max_cpu_seconds, "max_cpu_seconds", source, integer=False, allow_none=True)
    if training.optimizer not in ("adamw", "sgd"):
        raise InputError(f"{source}: training.optimizer must be 'adamw' or 'sgd'")
    if training.schedule not in ("poly", "cosine", "constant"):
        raise InputError(f"{source}: training.schedule must be 'poly', 'cosine' or 'constant'")
    if not 0 <= training.foreground_fraction <= 1:
        raise InputError(f"{source}: training.foreground_fraction must be in [0, 1]")
    if training.num_workers < 0:
        raise InputError(f"{source}: training.num_workers must be >= 0")
    if training.amp not in ("auto", True, False):
        raise InputError(f"{source}: training.amp must be auto, true or false")
    build_loss(training.loss, source=f"{source}: training.loss")  # report a bad loss now
    check_sample_weighting(training.sample_weighting, training.batch_size, training.ocm_lambda, training.qam_lr, source)
    training.hard_negative = check_hard_negative(training.hard_negative, source)
    if training.init_from:
        candidate = _path(training.init_from, base)
        if candidate.is_dir():  # a folder, relative to the config; otherwise a model name
            training.init_from = str(candidate)
    if training.checkpoint_every is None:
        training.checkpoint_every = training.val_every

    output = _path(raw["output"], base) if raw.get("output") else None
    checkpoint_dir = _path(raw["checkpoint_dir"], base) if raw.get("checkpoint_dir") else None
    return TrainConfig(card, data, training, output, checkpoint_dir, source, raw)


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML or JSON config file; ``overrides`` maps ``section.key`` to a value (command-line flags)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        raw = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read config ({exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON (line {exc.lineno}: {exc.msg})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise InputError(f"{path}: invalid YAML ({where}{getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a mapping with model, data and training sections")
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.rpartition(".")
        target = raw
        for part in filter(None, section.split(".")):
            target = target.setdefault(part, {})
        target[key] = value
    return config_from_dict(raw, path.parent.resolve(), str(path))
