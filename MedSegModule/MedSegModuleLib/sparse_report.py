"""What ``medseg finetune`` printed, read back: training progress, the saved model, choices, suggestions."""


from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from MedSegExtension.errors import InputError
from MedSegExtension.sparse.annotations import SliceRef

SUGGESTIONS_ATTRIBUTE = "MedSeg.Suggestions"
_PROGRESS = re.compile(r"step (\d+), loss ([-\d.eE+naninf]+), ~(\d+) s left")
_SAVED = re.compile(r"^saved model (\S+) version (\S+) in (.+)$")
_HELD_OUT = re.compile(r"^held-out slice (\S+): mean Dice ([\d.]+)$")
_SUGGESTION_LINE = re.compile(r"^\s+([ijk]): (.*)$")
_SUGGESTION = re.compile(r"(\d+) \(([\d.]+)\)")


@dataclass
class TrainingProgress:
    step: int
    loss: float
    seconds_left: int

    def describe(self) -> str:
        return f"step {self.step} · loss {self.loss:.3f} · about {self.seconds_left} s left"


def parse_training_progress(message: str) -> TrainingProgress | None:
    """The engine's ``"step 12, loss 0.532, ~98 s left"`` as numbers (None for other messages)."""
    match = _PROGRESS.search(message)
    if not match:
        return None
    return TrainingProgress(int(match.group(1)), float(match.group(2)), int(match.group(3)))


@dataclass
class FineTuneReport:
    """What ``medseg finetune`` printed: the saved model, the held-out check, suggestions."""

    model_name: str
    model_version: str
    model_folder: str
    held_out: str | None
    held_out_dice: float | None
    suggestions: dict[str, list[tuple[int, float]]]
    # per structure, the answer kept (network, growing, interpolation): the engine's JSON summary
    structure_choices: dict[str, str] = field(default_factory=dict)

    def describe_choices(self) -> str:
        return ", ".join(f"{name}: {how}" for name, how in self.structure_choices.items())


def parse_finetune_output(lines: Iterable[str]) -> FineTuneReport:
    saved = held_out = None
    suggestions: dict[str, list[tuple[int, float]]] = {}
    choices: dict[str, str] = {}
    in_suggestions = False
    for line in lines:
        text = line.rstrip()
        if text.startswith('{"result"'):
            choices = _structure_choices(text) or choices
        elif match := _SAVED.match(text):
            saved = match.groups()
        elif match := _HELD_OUT.match(text):
            held_out = (match.group(1), float(match.group(2)))
        elif text.startswith("slices to annotate next"):
            in_suggestions = True
        elif in_suggestions and (match := _SUGGESTION_LINE.match(text)):
            suggestions[match.group(1)] = [(int(i), float(s)) for i, s in _SUGGESTION.findall(match.group(2))]
    if saved is None:
        raise InputError("the fine-tuning ended without saying where it saved the model")
    return FineTuneReport(saved[0], saved[1], saved[2], held_out[0] if held_out else None,
                          held_out[1] if held_out else None, suggestions, choices)


def _structure_choices(text: str) -> dict[str, str]:
    """``structure_choices`` of the engine's final ``{"result": {...}}`` line (``--progress json``)."""
    try:
        summary = json.loads(text).get("result", {})
    except (json.JSONDecodeError, AttributeError):
        return {}
    choices = summary.get("structure_choices") if isinstance(summary, dict) else None
    return {str(name): str(how) for name, how in choices.items()} if isinstance(choices, dict) else {}


def parse_suggestions_json(text: str) -> dict[str, list[tuple[int, float]]]:
    """``medseg suggest --json`` output: ``{"k": [{"index": 12, "score": 0.9}, …], …}``."""
    data = json.loads(text)
    return {axis: [(int(p["index"]), float(p["score"])) for p in picks] for axis, picks in data.items()}


def ordered_suggestions(suggestions: Mapping[str, Sequence[Sequence[float]]], marked: Iterable[SliceRef] = ()) -> list[SliceRef]:
    """All suggested slices, most uncertain first, without those already marked."""
    done = set(marked)
    ranked = sorted(((float(score), axis, int(index)) for axis, picks in suggestions.items() for index, score in picks),
                    key=lambda item: (-item[0], item[1], item[2]))
    return [SliceRef(axis, index) for _score, axis, index in ranked if SliceRef(axis, index) not in done]


def stored_suggestions(node: Any) -> dict[str, list[tuple[int, float]]]:
    text = node.GetAttribute(SUGGESTIONS_ATTRIBUTE) if node is not None else None
    return {axis: [(int(i), float(s)) for i, s in picks] for axis, picks in json.loads(text).items()} if text else {}
