"""The model card: everything needed to run a model, read from ``model.json``.

Conventions (stated once, used everywhere):

- ``target_spacing`` and ``window_size`` are in image axis order (i, j, k) = (x, y, z), like
  SimpleITK sizes and spacings. Arrays handed to the network are (C, k, j, i), i.e. reversed.
- ``orientation`` is the SimpleITK ``DICOMOrient`` code of the canonical frame the network
  works in; with "LPS" the array's last axis (i) runs from patient right to patient left,
  which is the axis a left-right flip mirrors.
- Network output channel 0 is background; channel ``n`` (n >= 1) is ``labels[n - 1]``.
- Colours are 0..255 RGB integers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError

CARD_FILE = "model.json"
CARD_FORMAT_VERSION = 1
NORMALIZATION_KINDS = ("window", "percentile", "zscore", "none")


def _slicerio_terminology(terminology: dict[str, Any] | None) -> dict[str, Any] | None:
    """Accept ``modifier`` as a short name for slicerio's ``typeModifier``."""
    if not terminology:
        return terminology
    terminology = dict(terminology)
    if "modifier" in terminology:
        terminology.setdefault("typeModifier", terminology.pop("modifier"))
    return terminology


@dataclass
class LabelInfo:
    value: int
    name: str
    color: tuple[int, int, int]
    # slicerio's terminology dict: {"category": [scheme, code, meaning], "type": [...], "typeModifier": [...],
    # optional "anatomicRegion"/"anatomicRegionModifier"/"contextName"}; written into .seg.nrrd as is.
    terminology: dict[str, Any] | None = None


@dataclass
class Normalization:
    """How intensities are scaled before the network.

    ``window``: clip to [lower, upper] (e.g. CT HU) and scale to [0, 1].
    ``percentile``: clip to the [lower, upper] percentiles of the foreground, scale to [0, 1].
    ``zscore``: subtract the foreground mean and divide by its standard deviation.
    """

    kind: str = "percentile"
    lower: float = 0.5
    upper: float = 99.5


@dataclass
class NetworkConfig:
    """The U-Net family: see :mod:`MedSegExtension.networks` (``architecture``: the model type)."""

    architecture: str = "unet3d"  # "unet3d", "unet2.5d" (slice stacks) or "unet2d_planes" (three planes + vote)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    block: str = "basic"  # "basic" (two convs) or "residual"
    squeeze_excitation: bool = False
    norm: str = "instance"  # "instance" or "batch"
    deep_supervision: bool = False
    dropout: float = 0.0
    slices: int = 3  # unet2.5d / unet2d_planes: adjacent slices in as channels (odd; 1 = plain 2D)
    recurrent_passes: int = 1  # >= 2: the previous prediction is fed back with the image (seed 002)

    def summary(self) -> str:
        """The model type in one line, e.g. ``unet2.5d (3 slices), recurrent refinement: 2 passes``."""
        text = self.architecture
        if self.architecture != "unet3d":
            text += f" ({self.slices} slice{'s' if self.slices != 1 else ''})"
        if self.recurrent_passes > 1:
            text += f", recurrent refinement: {self.recurrent_passes} passes"
        return text


@dataclass
class ModelCard:
    name: str
    version: str
    description: str
    modality: str  # "CT", "MR" or "any"
    input_channels: int
    labels: list[LabelInfo]
    target_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    window_size: tuple[int, int, int] = (96, 96, 96)
    orientation: str = "LPS"
    normalization: Normalization = field(default_factory=Normalization)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    left_right_pairs: list[tuple[int, int]] = field(default_factory=list)  # label values swapped by an LR flip
    crop_foreground: bool = True
    channel_names: list[str] = field(default_factory=list)
    weights_file: str = "model.pt"
    sha256: str = ""
    license: str = ""
    training: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None  # where the card was read from; not serialized

    @property
    def num_classes(self) -> int:
        """Network output channels: background plus one per label."""
        return 1 + len(self.labels)

    @property
    def weights_path(self) -> Path:
        """The weights file, which must lie inside the card's folder (symlinks resolved)."""
        if self.folder is None:
            raise ModelError(f"model {self.name!r}: card has no folder, so its weights cannot be found")
        path = self.folder / self.weights_file
        folder = self.folder.resolve()
        if Path(self.weights_file).is_absolute() or path.resolve().parent != folder:
            raise ModelError(f"{self.folder / CARD_FILE}: weights_file {self.weights_file!r} points outside the model "
                             f"folder; refused (it must be a file name in that folder)")
        return path

    def label_by_value(self, value: int) -> LabelInfo:
        for label in self.labels:
            if label.value == value:
                return label
        raise KeyError(value)

    def channel_swap_for_lr_flip(self) -> list[int]:
        """Permutation of output channels that a left-right flip induces (identity where unpaired)."""
        channel_of = {label.value: index + 1 for index, label in enumerate(self.labels)}
        permutation = list(range(self.num_classes))
        for left, right in self.left_right_pairs:
            a, b = channel_of[left], channel_of[right]
            permutation[a], permutation[b] = b, a
        return permutation

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("folder")
        data["format_version"] = CARD_FORMAT_VERSION
        return data

    def save(self, folder: str | Path, card_file: str = CARD_FILE) -> Path:
        """Write ``model.json`` (or ``card_file``) into ``folder`` atomically."""
        from ..io.atomic import atomic_output

        path = Path(folder) / card_file
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelError(f"{source}: malformed model card (a JSON object expected, not {type(data).__name__})")
        try:
            labels = [
                LabelInfo(
                    value=int(item["value"]),
                    name=str(item["name"]),
                    color=tuple(int(c) for c in item["color"]),  # type: ignore[arg-type]
                    terminology=_slicerio_terminology(item.get("terminology")),
                )
                for item in data["labels"]
            ]
            card = cls(
                name=str(data["name"]),
                version=str(data["version"]),
                description=str(data.get("description", "")),
                modality=str(data.get("modality", "any")),
                input_channels=int(data.get("input_channels", 1)),
                labels=labels,
                target_spacing=tuple(float(s) for s in data.get("target_spacing", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
                window_size=tuple(int(s) for s in data.get("window_size", (96, 96, 96))),  # type: ignore[arg-type]
                orientation=str(data.get("orientation", "LPS")),
                normalization=Normalization(**data.get("normalization", {})),
                network=NetworkConfig(
                    **{k: tuple(v) if k == "channels" else v for k, v in data.get("network", {}).items()}
                ),
                left_right_pairs=[tuple(int(v) for v in pair) for pair in data.get("left_right_pairs", [])],  # type: ignore[misc]
                crop_foreground=bool(data.get("crop_foreground", True)),
                channel_names=list(data.get("channel_names", [])),
                weights_file=str(data.get("weights_file", "model.pt")),
                sha256=str(data.get("sha256", "")),
                license=str(data.get("license", "")),
                training=dict(data.get("training", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"{source}: malformed model card ({type(exc).__name__}: {exc})") from None
        card.validate(source)
        return card

    def validate(self, source: str = "model card") -> None:
        problems = []
        values = [label.value for label in self.labels]
        if not self.labels:
            problems.append("no labels")
        if len(set(values)) != len(values):
            problems.append("duplicate label values")
        if any(v <= 0 for v in values):
            problems.append("label values must be positive (0 is background)")
        if any(len(label.color) != 3 or not all(0 <= c <= 255 for c in label.color) for label in self.labels):
            problems.append("colours must be three integers in 0..255")
        if len(self.target_spacing) != 3 or any(s <= 0 for s in self.target_spacing):
            problems.append("target_spacing must be three positive numbers")
        if len(self.window_size) != 3 or any(s < 8 for s in self.window_size):
            problems.append("window_size must be three integers >= 8")
        if self.input_channels < 1:
            problems.append("input_channels must be >= 1")
        if self.normalization.kind not in NORMALIZATION_KINDS:
            problems.append(f"normalization kind must be one of {', '.join(NORMALIZATION_KINDS)}")
        for pair in self.left_right_pairs:
            if len(pair) != 2 or not set(pair) <= set(values):
                problems.append(f"left_right_pairs entry {list(pair)} names an unknown label value")
        if problems:
            raise ModelError(f"{source}: " + "; ".join(problems))

    @classmethod
    def load(cls, folder: str | Path, card_file: str = CARD_FILE) -> ModelCard:
        folder = Path(folder)
        path = folder / card_file
        if not path.is_file():
            raise ModelError(f"{folder}: not a model folder (no {card_file})")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot read model card ({exc})") from None
        card = cls.from_dict(data, source=str(path))
        card.folder = folder
        return card
