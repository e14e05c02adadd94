"""The benchmark's real tasks: an image, its full reference label map and the structures' names.

- ``colin27``: Colin27 ``ch2`` T1 with caudate, putamen, thalamus and hippocampus, left and right,
  from AAL (same grid); cropped to the eight structures plus a margin.
- ``mni152``: the ICBM 2009a MNI152 T1 (skull-stripped, from nilearn) with grey and white matter:
  each voxel takes the largest of P(GM), P(WM) and 1 - P(GM) - P(WM) (the third = background), so
  the two masks do not overlap (nilearn's thresholded GM/WM masks do); cropped to the brain.
- ``cranium``: bone in the real head CT of InVesalius' ``Cranium.inv3`` (its bone mask, a
  226..3071 HU threshold); cropped to the head mask. A threshold task: Slicer's Threshold effect
  scores 1.0 on it, so it cannot tell methods apart; kept in development only.
- ``colin27-gyri-dev``, ``jhu-dev``, and the test tasks ``colin27-nuclei``, ``colin27-gyri``,
  ``harvard-oxford``, ``jhu``, ``cranium-skull``: see :data:`SPLIT` and the task functions.

:data:`SPLIT` fixes which tasks are development (looked at, tuned on) and which are test (run
once, from a tagged commit, reported as they come).

Crops keep the physical geometry (``RegionOfInterest``); slice indices refer to the cropped grid,
``crop_start`` says where it starts in the original volume.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from MedSegExtension.models.card import LabelInfo

PALETTE = [(230, 80, 80), (80, 80, 230), (80, 200, 80), (220, 200, 60), (200, 90, 200), (60, 200, 200),
           (240, 150, 60), (150, 100, 60)]

# AAL region names (aal.nii.txt) of the Colin27 structures, in class order.
COLIN27_STRUCTURES = ("Caudate_L", "Caudate_R", "Putamen_L", "Putamen_R", "Thalamus_L", "Thalamus_R",
                      "Hippocampus_L", "Hippocampus_R")


@dataclass
class Task:
    name: str
    description: str
    image: sitk.Image
    reference: sitk.Image  # UInt8 labels 0..len(classes) on the image's grid
    classes: list[LabelInfo]
    crop: str = "none"
    crop_start: tuple[int, int, int] = (0, 0, 0)  # (i, j, k) of the crop in the original volume
    source_size: tuple[int, int, int] = field(default=(0, 0, 0))

    @property
    def values(self) -> list[int]:
        return [info.value for info in self.classes]

    @property
    def names(self) -> dict[int, str]:
        return {info.value: info.name for info in self.classes}

    def info(self) -> dict[str, object]:
        """What the results JSON records about the task."""
        return {
            "name": self.name,
            "description": self.description,
            "size": list(self.image.GetSize()),
            "spacing_mm": [round(s, 4) for s in self.image.GetSpacing()],
            "source_size": list(self.source_size),
            "crop": self.crop,
            "crop_start": list(self.crop_start),
            "classes": {str(info.value): info.name for info in self.classes},
        }


def label_infos(names: Sequence[str]) -> list[LabelInfo]:
    return [LabelInfo(value, name, PALETTE[(value - 1) % len(PALETTE)]) for value, name in enumerate(names, 1)]


def crop_box(mask: np.ndarray, spacing: Sequence[float], margin_mm: float) -> tuple[list[int], list[int]]:
    """Index (i, j, k) and size of ``mask``'s (k, j, i) bounding box grown by ``margin_mm``, inside the volume."""
    if not mask.any():
        raise ValueError("nothing to crop around: the mask is empty")
    start, size = [], []
    for axis in range(3):  # i, j, k
        array_axis = 2 - axis
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != array_axis)))
        margin = int(np.ceil(margin_mm / spacing[axis]))
        low = max(0, int(hits[0]) - margin)
        high = min(mask.shape[array_axis] - 1, int(hits[-1]) + margin)
        start.append(low)
        size.append(high - low + 1)
    return start, size


def make_task(
    name: str,
    description: str,
    image: sitk.Image,
    labels: np.ndarray,
    class_names: Sequence[str],
    *,
    crop_mask: np.ndarray | None = None,
    margin_mm: float = 10.0,
    crop_note: str = "",
) -> Task:
    """A task from a (k, j, i) label array on ``image``'s grid, cropped to ``crop_mask`` (default: the labels)."""
    reference = sitk.GetImageFromArray(labels.astype(np.uint8))
    reference.CopyInformation(image)
    start, size = crop_box(labels > 0 if crop_mask is None else crop_mask, image.GetSpacing(), margin_mm)
    cropped_image = sitk.RegionOfInterest(image, size, start)
    cropped_reference = sitk.RegionOfInterest(reference, size, start)
    note = crop_note or f"bounding box of the structures + {margin_mm:g} mm"
    return Task(name, description, cropped_image, cropped_reference, label_infos(class_names),
                crop=f"{note}: {size[0]}x{size[1]}x{size[2]} of {'x'.join(map(str, image.GetSize()))}",
                crop_start=(start[0], start[1], start[2]), source_size=tuple(image.GetSize()))  # type: ignore[arg-type]


def colin27_task(structures: Sequence[str] = COLIN27_STRUCTURES, margin_mm: float = 10.0,
                 name: str = "colin27") -> Task:
    """Colin27 T1 with AAL structures (by AAL name), relabelled 1..n in the order given."""
    from MedSegExtension.datasets.colin27 import aal_names, load_aal, load_colin27_t1

    by_name = {name: value for value, name in aal_names().items()}
    unknown = [name for name in structures if name not in by_name]
    if unknown:
        raise ValueError(f"AAL has no region {unknown} (see aal.nii.txt)")
    aal = sitk.GetArrayFromImage(load_aal())
    labels = np.zeros(aal.shape, dtype=np.uint8)
    for value, structure in enumerate(structures, 1):
        labels[aal == by_name[structure]] = value
    image = load_colin27_t1()
    return make_task(name, "Colin27 ch2 T1 (1 mm), AAL structures", image, labels, structures,
                     margin_mm=margin_mm)


def mni152_task(margin_mm: float = 4.0) -> Task:
    """MNI152 2009a T1 with exclusive grey/white matter labels (1 = GM, 2 = WM)."""
    from MedSegExtension.datasets.mni152 import load_mni152_probability, load_mni152_t1

    gm = sitk.GetArrayFromImage(load_mni152_probability("gm"))
    wm = sitk.GetArrayFromImage(load_mni152_probability("wm"))
    rest = 1.0 - gm - wm
    labels = np.argmax(np.stack([rest, gm, wm]), axis=0).astype(np.uint8)  # 0 background, 1 GM, 2 WM
    image = load_mni152_t1()
    return make_task("mni152", "MNI152 2009a T1 (1 mm, skull-stripped), GM/WM = argmax of tissue probabilities",
                     image, labels, ("Grey matter", "White matter"), margin_mm=margin_mm,
                     crop_note=f"brain + {margin_mm:g} mm")


def cranium_task(margin_mm: float = 4.0) -> Task:
    """Bone in InVesalius' Cranium head CT (its bone threshold mask), cropped to the head."""
    from MedSegExtension.datasets.invesalius import load_cranium_ct, load_cranium_masks

    masks = load_cranium_masks()
    bone = sitk.GetArrayFromImage(masks["bone"]).astype(np.uint8)
    head = sitk.GetArrayFromImage(masks["head"]) > 0
    image = sitk.Cast(load_cranium_ct(), sitk.sitkFloat32)
    return make_task("cranium", "Cranium.inv3 head CT (0.96x0.96x1.5 mm), bone mask 226..3071 HU",
                     image, bone, ("Bone",), crop_mask=head, margin_mm=margin_mm,
                     crop_note=f"head mask + {margin_mm:g} mm")


def mni_atlas_task(name: str, atlas: str, structures: Sequence[str], margin_mm: float = 6.0) -> Task:
    """The nilearn MNI152 2009a T1 with Harvard–Oxford (``"harvard-oxford"``) or JHU (``"jhu"``) structures.

    The atlas is resampled (nearest) onto the T1's grid; structures are atlas names, relabelled
    1..n in the order given. The atlases were drawn on other MNI templates, so their borders
    follow the T1's edges only roughly: structures without a clean intensity edge.
    """
    from MedSegExtension.datasets._sitk import resample_like
    from MedSegExtension.datasets.mni152 import load_mni152_brain_mask, load_mni152_t1
    from MedSegExtension.datasets.mni_atlases import (
        HARVARD_OXFORD_CORTICAL,
        jhu_names,
        load_harvard_oxford_cortical,
        load_jhu_white_matter,
    )

    image = load_mni152_t1()
    if atlas == "harvard-oxford":
        names = dict(enumerate(HARVARD_OXFORD_CORTICAL, 1))
        labels_image = load_harvard_oxford_cortical(load_mni152_brain_mask())
        what = "Harvard–Oxford cortical (max-prob thr0, both hemispheres), placed on the brain's bounding box"
    elif atlas == "jhu":
        names, labels_image, what = jhu_names(), load_jhu_white_matter(), "JHU ICBM-DTI-81 white-matter labels"
    else:
        raise ValueError(f"unknown atlas {atlas!r}")
    by_name = {label: value for value, label in names.items()}
    unknown = [structure for structure in structures if structure not in by_name]
    if unknown:
        raise ValueError(f"{atlas} has no region {unknown}")
    atlas_array = sitk.GetArrayFromImage(resample_like(labels_image, image, nearest=True))
    labels = np.zeros(atlas_array.shape, dtype=np.uint8)
    for value, structure in enumerate(structures, 1):
        labels[atlas_array == by_name[structure]] = value
    return make_task(name, f"MNI152 2009a T1 (1 mm, skull-stripped), {what}, resampled nearest",
                     image, labels, structures, margin_mm=margin_mm)


def skull_component(bone: np.ndarray) -> np.ndarray:
    """The largest 6-connected component of a bone mask (k, j, i): the skull, without the head support."""
    from scipy import ndimage

    components, count = ndimage.label(bone)
    if count == 0:
        raise ValueError("empty bone mask")
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(np.argmax(sizes))


def cranium_skull_task(margin_mm: float = 4.0) -> Task:
    """The skull in the Cranium CT: its bone mask's largest connected piece (the head support's
    two pieces, also bone by HU, are background), so a threshold alone does not score 1.0
    (0.952); Threshold then Islands (keep largest) would, so it is a weak test of methods."""
    from MedSegExtension.datasets.invesalius import load_cranium_ct, load_cranium_masks

    masks = load_cranium_masks()
    skull = skull_component(sitk.GetArrayFromImage(masks["bone"]) > 0).astype(np.uint8)
    head = sitk.GetArrayFromImage(masks["head"]) > 0
    image = sitk.Cast(load_cranium_ct(), sitk.sitkFloat32)
    return make_task("cranium-skull", "Cranium.inv3 head CT, the skull = largest connected piece of the "
                     "226..3071 HU bone mask (the head support is not)", image, skull, ("Skull",),
                     crop_mask=head, margin_mm=margin_mm, crop_note=f"head mask + {margin_mm:g} mm")


TASKS: dict[str, Callable[[], Task]] = {
    # development
    "colin27": colin27_task,
    "mni152": mni152_task,
    "cranium": cranium_task,
    "colin27-gyri-dev": lambda: colin27_task(("Precentral_L", "Lingual_R"), name="colin27-gyri-dev"),
    "jhu-dev": lambda: mni_atlas_task("jhu-dev", "jhu", ("Genu_of_corpus_callosum", "Cerebral_peduncle_L")),
    # test
    "colin27-nuclei": lambda: colin27_task(("Pallidum_L", "Amygdala_R"), name="colin27-nuclei"),
    "colin27-gyri": lambda: colin27_task(("Temporal_Sup_R", "Cuneus_L"), name="colin27-gyri"),
    "harvard-oxford": lambda: mni_atlas_task("harvard-oxford", "harvard-oxford", (
        "Heschl's Gyrus (includes H1 and H2)", "Cingulate Gyrus, anterior division")),
    "jhu": lambda: mni_atlas_task("jhu", "jhu", ("Body_of_corpus_callosum", "Posterior_limb_of_internal_capsule_R",
                                                 "Superior_longitudinal_fasciculus_L")),
    "cranium-skull": cranium_skull_task,
}

# Fixed before any method change of issue #10; choose methods and settings on "dev" only.
SPLIT: dict[str, tuple[str, ...]] = {
    # Every design choice so far was made on colin27, mni152 and cranium; the two new kinds (AAL
    # cortical gyri, JHU tracts) give development variety. cranium is a threshold of the image
    # (Slicer's Threshold effect scores 1.0), so it cannot tell methods apart; it stays here only.
    "dev": ("colin27", "mni152", "cranium", "colin27-gyri-dev", "jhu-dev"),
    # Structures nobody has tuned on: small deep nuclei, other gyri, Harvard–Oxford cortex and JHU
    # tracts on another template (borders without a clean intensity edge), and a CT structure that
    # a threshold does not give. Run once, from a tagged commit.
    "test": ("colin27-nuclei", "colin27-gyri", "harvard-oxford", "jhu", "cranium-skull"),
}
SPLIT_REASON = ("dev = the tasks every choice so far was made on, plus two new kinds; test = new structures "
                "and images nobody tuned on, run once from a tagged commit")


def load_task(name: str, structures: Sequence[str] | None = None) -> Task:
    """A task by name; ``structures`` restricts Colin27 to some AAL regions."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    if structures:
        if name != "colin27":  # the development task only
            raise ValueError("--structures applies to the colin27 task only")
        return colin27_task(structures)
    return TASKS[name]()
