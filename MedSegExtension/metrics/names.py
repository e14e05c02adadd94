"""Matching segments by name: Slicer numbers segments freely, so a map that carries segment names
(``.seg.nrrd``) is renumbered to the values its names have in the reference or the label names."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def renamed_value(value: int, names: Mapping[int, str], target: Mapping[int, str]) -> int:
    by_name = _unique_name_index(target)
    return by_name.get(names[value], value)


def _unique_name_index(names: Mapping[int, str]) -> dict[str, int]:
    seen: dict[str, list[int]] = {}
    for value, name in names.items():
        seen.setdefault(name, []).append(value)
    return {name: values[0] for name, values in seen.items() if len(values) == 1}


def match_by_name(
    array: np.ndarray, names: Mapping[int, str], target: Mapping[int, str], source: str
) -> tuple[np.ndarray, list[str]]:
    """Renumber ``array`` so that a segment named like a target label gets that label's value.

    Segments whose name is not among the targets keep their value, with a warning when the
    target calls that value something else.
    """
    by_name = _unique_name_index(target)
    remap = {v: by_name[n] for v, n in names.items() if n in by_name and by_name[n] != v}
    notes = []
    unmatched = [(v, n) for v, n in names.items() if n not in by_name and v in target and target[v] != n]
    if unmatched:
        listed = ", ".join(f"{n!r} ({v}) is {target[v]!r}" for v, n in sorted(unmatched))
        notes.append(f"{source}: segment names not found, compared by value: {listed}")
    if not remap:
        return array, notes
    out = array.copy()
    for old, new in remap.items():
        out[array == old] = new
    moved = ", ".join(f"{names[o]!r} {o}→{n}" for o, n in sorted(remap.items()))
    notes.append(f"{source}: label values matched by segment name ({moved})")
    if len({renamed_value(v, names, target) for v in names}) < len(names):
        notes.append(f"{source}: after matching by name, two segments share one label value")
    return out, notes
