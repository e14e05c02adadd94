"""Which of a user's segment names mean the same structure as a model's class names.

Users name segments in many styles: "Left caudate nucleus" (a Slicer terminology), "Caudate_L"
(AAL), "caudate left", "L caudate". A name's key is its side (left, right or none) and its
other words, lower-cased, without words that do not tell structures apart ("nucleus", "the",
"of"). Two names with the same key, and at least one word besides the side, match.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..models.card import LabelInfo

_SIDES = {"left": "left", "l": "left", "lt": "left", "right": "right", "r": "right", "rt": "right"}
_FILLER = frozenset({"nucleus", "the", "of", "structure", "proper"})

StructureKey = tuple[str, frozenset[str]]


def structure_key(name: str) -> StructureKey | None:
    """``(side, words)`` of a structure name; None when only a side (or nothing) is left."""
    words = re.findall(r"[a-z0-9]+", name.lower())  # "L4" stays one word: a vertebra, not a side
    sides = sorted({_SIDES[word] for word in words if word in _SIDES})
    rest = frozenset(word for word in words if word not in _SIDES and word not in _FILLER)
    if not rest or len(sides) > 1:
        return None
    return (sides[0] if sides else "", rest)


def same_structure(a: str, b: str) -> bool:
    key = structure_key(a)
    return key is not None and key == structure_key(b)


def matching_class(name: str, candidates: Sequence[LabelInfo]) -> LabelInfo | None:
    """The candidate with the same name (case aside), else the first with the same structure key."""
    for candidate in candidates:
        if candidate.name.strip().lower() == name.strip().lower():
            return candidate
    return next((candidate for candidate in candidates if same_structure(name, candidate.name)), None)


def left_right_pairs(classes: Sequence[LabelInfo]) -> list[tuple[int, int]]:
    """``(left value, right value)`` of classes that are the same structure on both sides."""
    pairs = []
    for left in classes:
        key = structure_key(left.name)
        if key is None or key[0] != "left":
            continue
        for right in classes:
            if structure_key(right.name) == ("right", key[1]):
                pairs.append((left.value, right.value))
    return pairs
