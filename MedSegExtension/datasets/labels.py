"""The bundled brain model's classes and the generation labels of the whole-head label maps.

Two label spaces are used (the SynthSeg design):

- **Classes** (1..10): what the bundled model segments, left/right pairs. These are the values of
  the model card's labels and of every evaluation label map.
- **Generation labels** (1..10 plus 20..40): what the prepared whole-head label maps hold. Values
  1..10 are the classes themselves; 20 and above are tissues that exist only so synthetic images
  look like heads (white matter, cortex, CSF, skull, scalp, ...). Training maps them to 0
  (background) with :data:`GENERATION_TO_CLASS`.

Left/right follow the patient: "Left" is the patient's left, i.e. +x in LPS physical space.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..models.card import LabelInfo

CATEGORY_ANATOMICAL_STRUCTURE = ["SCT", "123037004", "Anatomical Structure"]
LEFT = ["SCT", "7771000", "Left"]
RIGHT = ["SCT", "24028007", "Right"]

# SNOMED CT codes checked against DICOM PS3.16 CID 7153 "CNS Segmentation Type" (caudate 11000004,
# insula 36169008, thalamus 42695009, hippocampus 5366008, putamen 89278009, globus pallidus 14738005).
# The lentiform nucleus (putamen + globus pallidus) is not in CID 7153 and its SNOMED code could not be
# verified offline, so it carries a local code (scheme "MedSeg") rather than a guessed SCT number.
_TYPES: dict[str, list[str]] = {
    "caudate": ["SCT", "11000004", "Caudate nucleus"],
    "lentiform": ["MedSeg", "lentiform-nucleus", "Lentiform nucleus (putamen and globus pallidus)"],
    "insula": ["SCT", "36169008", "Insula"],
    "thalamus": ["SCT", "42695009", "Thalamus"],
    "hippocampus": ["SCT", "5366008", "Hippocampus"],
}

# (value, structure key, side, RGB): colours after FreeSurferColorLUT, right side a shade darker.
_CLASS_TABLE: list[tuple[int, str, str, tuple[int, int, int]]] = [
    (1, "caudate", "Left", (122, 186, 220)),
    (2, "caudate", "Right", (82, 146, 180)),
    (3, "lentiform", "Left", (236, 13, 176)),
    (4, "lentiform", "Right", (176, 8, 130)),
    (5, "insula", "Left", (255, 192, 32)),
    (6, "insula", "Right", (205, 142, 10)),
    (7, "thalamus", "Left", (0, 178, 44)),
    (8, "thalamus", "Right", (0, 118, 14)),
    (9, "hippocampus", "Left", (220, 216, 20)),
    (10, "hippocampus", "Right", (160, 156, 10)),
]


def _terminology(structure: str, side: str) -> dict[str, Any]:
    return {
        "category": list(CATEGORY_ANATOMICAL_STRUCTURE),
        "type": list(_TYPES[structure]),
        "typeModifier": list(LEFT if side == "Left" else RIGHT),
    }


def _name(structure: str, side: str) -> str:
    pretty = {"caudate": "caudate nucleus", "lentiform": "lentiform nucleus"}.get(structure, structure)
    return f"{side} {pretty}"


BRAIN_CLASSES: list[LabelInfo] = [
    LabelInfo(value, _name(structure, side), color, _terminology(structure, side))
    for value, structure, side, color in _CLASS_TABLE
]
LEFT_RIGHT_PAIRS: list[tuple[int, int]] = [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10)]
CLASS_NAMES: dict[int, str] = {label.value: label.name for label in BRAIN_CLASSES}

# Generation-only tissues (mapped to background for training targets).
GEN_CEREBRAL_WM = 20
GEN_CORTEX = 21
GEN_CSF = 22  # extra-cerebral and sulcal CSF
GEN_VENTRICLE = 23
GEN_AMYGDALA = 24
GEN_ACCUMBENS = 25
GEN_BRAINSTEM = 26
GEN_CEREBELLUM = 27
GEN_SKULL = 30
GEN_MARROW = 31  # diploe between the skull tables
GEN_SCALP = 32
GEN_FAT = 33  # subcutaneous fat layer of the scalp

GENERATION_NAMES: dict[int, str] = {
    **CLASS_NAMES,
    GEN_CEREBRAL_WM: "cerebral white matter",
    GEN_CORTEX: "cerebral cortex (other than insula)",
    GEN_CSF: "cerebrospinal fluid",
    GEN_VENTRICLE: "ventricles",
    GEN_AMYGDALA: "amygdala",
    GEN_ACCUMBENS: "nucleus accumbens",
    GEN_BRAINSTEM: "brainstem and ventral diencephalon",
    GEN_CEREBELLUM: "cerebellum",
    GEN_SKULL: "skull (cortical bone)",
    GEN_MARROW: "diploe (bone marrow)",
    GEN_SCALP: "scalp soft tissue",
    GEN_FAT: "subcutaneous fat",
}
GENERATION_TO_CLASS: dict[int, int] = {value: (value if value in CLASS_NAMES else 0) for value in GENERATION_NAMES}


def apply_mapping(array: np.ndarray, mapping: dict[int, int], default: int = 0) -> np.ndarray:
    """Map integer labels through ``mapping`` (values not in it become ``default``); returns uint8."""
    array = np.asarray(array)
    if array.size == 0:
        return array.astype(np.uint8)
    top = int(max(int(array.max()), max(mapping, default=0))) + 1
    lut = np.full(top, default, dtype=np.uint8)
    for source, target in mapping.items():
        if source >= 0:
            lut[source] = target
    if array.min() < 0:
        raise ValueError("label maps must not hold negative values")
    return lut[array.astype(np.int64)]
