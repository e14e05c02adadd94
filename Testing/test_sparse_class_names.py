"""Matching a user's segment names to a base model's classes, across naming styles."""

from __future__ import annotations

import pytest

from MedSegExtension.models.card import LabelInfo
from MedSegExtension.sparse.class_names import left_right_pairs, matching_class, same_structure, structure_key


@pytest.mark.parametrize("user", ["Caudate_L", "caudate left", "L caudate", "Left Caudate Nucleus", "lt. caudate"])
def test_naming_styles_of_the_same_structure_match(user: str) -> None:
    assert same_structure(user, "Left caudate nucleus")


@pytest.mark.parametrize(("a", "b"), [
    ("Caudate_L", "Right caudate nucleus"),  # the other side
    ("Putamen_L", "Left lentiform nucleus"),  # a different structure
    ("Caudate", "Left caudate nucleus"),  # no side against a side
    ("L4 vertebra", "Left vertebra"),  # L4 is a vertebra's name, not a side
    ("Left", "Left caudate nucleus"),  # only a side
    ("left right caudate", "Left caudate nucleus"),  # both sides: no key
])
def test_different_structures_do_not_match(a: str, b: str) -> None:
    assert not same_structure(a, b)


def test_exact_name_wins_over_a_structure_match() -> None:
    candidates = [LabelInfo(1, "Left caudate nucleus", (1, 2, 3)), LabelInfo(2, "Caudate_L", (4, 5, 6))]
    assert matching_class("caudate_l", candidates).value == 2
    assert matching_class("L caudate", candidates).value == 1
    assert matching_class("Thalamus_L", candidates) is None
    assert structure_key("Nucleus") is None


def test_left_right_pairs_in_any_style() -> None:
    classes = [LabelInfo(1, "Caudate_L", (0, 0, 0)), LabelInfo(2, "Caudate_R", (0, 0, 0)),
               LabelInfo(3, "Left thalamus", (0, 0, 0)), LabelInfo(4, "thalamus right", (0, 0, 0)),
               LabelInfo(5, "Brainstem", (0, 0, 0))]
    assert left_right_pairs(classes) == [(1, 2), (3, 4)]
