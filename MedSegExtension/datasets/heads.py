"""Whole-head generation label maps for label-to-image synthesis (see :mod:`.labels`).

Desikan-Killiany (DK) maps label only cortex parcels and deep nuclei; a synthetic image made from
them alone would be floating blobs. These functions add the tissues a head has:

- **MNI152 head** (:func:`mni_generation_labels`): the nilearn MNI152 grey/white-matter maps give
  cortex, white matter and CSF (ventricles = CSF deeper than 8 mm inside the brain), the DK atlas gives
  the classes, amygdala, accumbens and brainstem, and brain tissue below and behind the cerebrum that DK
  leaves unlabelled is cerebellum.
- **Donor heads** (:func:`donor_generation_labels`): a donor's own DK map; white matter = unlabelled
  voxels enclosed by the donor's cortex (per hemisphere, 3D and sagittal hole filling); ventricles,
  cerebellum and brainstem come from the MNI152 generation map, affinely registered onto the donor's
  brain (SimpleITK, label-mask mean squares).
- **Head layers** (:func:`add_head_layers`): CSF in sulci and around the brain, skull with diploe,
  subcutaneous fat and scalp, as shells of smoothly varying thickness outside the brain.

All maps are built on 1 mm LPS grids padded so that the scalp fits.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from . import abagen_donors, mni152
from ._sitk import like, resample_like
from .labels import (
    GEN_BRAINSTEM,
    GEN_CEREBELLUM,
    GEN_CEREBRAL_WM,
    GEN_CORTEX,
    GEN_CSF,
    GEN_FAT,
    GEN_MARROW,
    GEN_SCALP,
    GEN_SKULL,
    GEN_VENTRICLE,
)

HEAD_MARGIN_MM = 24.0
# Mean shell thicknesses (mm) outside the brain: CSF rim, skull, fat, scalp.
SHELLS_MM = {"csf": 2.5, "skull": 6.5, "fat": 2.0, "scalp": 4.5}


def _ball(radius_vox: int) -> np.ndarray:
    r = int(radius_vox)
    grid = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    return (grid**2).sum(0) <= r * r


def _pad(image: sitk.Image, margin_mm: float = HEAD_MARGIN_MM) -> sitk.Image:
    pad = [int(np.ceil(margin_mm / s)) for s in image.GetSpacing()]
    return sitk.ConstantPad(image, pad, pad, 0)


def _smooth_field(shape: tuple[int, ...], rng: np.random.Generator, low: float, high: float, cells: int = 5) -> np.ndarray:
    """A smooth random field in [low, high] (cubic upsampling of a coarse random grid)."""
    coarse = rng.uniform(low, high, size=(cells,) * len(shape))
    return np.clip(ndimage.zoom(coarse, [n / cells for n in shape], order=3, mode="nearest"), low, high)[
        tuple(slice(0, n) for n in shape)
    ]


def add_head_layers(labels: np.ndarray, spacing: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Add CSF (sulcal and a rim), skull + diploe, fat and scalp around the brain in ``labels`` (k, j, i).

    ``spacing`` is (x, y, z) mm. Voxels already labelled are kept; only background changes. Thickness
    varies smoothly (x0.7..1.4) across the head, drawn from ``rng``.
    """
    out = labels.astype(np.uint8, copy=True)
    zyx = tuple(float(s) for s in spacing[::-1])
    brain = out > 0
    radius = max(1, int(round(4.0 / min(zyx))))
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(brain, _ball(radius), iterations=1))
    out[closed & ~brain] = GEN_CSF
    outside = ndimage.distance_transform_edt(~closed, sampling=zyx)
    factors = {name: _smooth_field(out.shape, rng, 0.7, 1.4) for name in ("csf", "skull", "fat", "scalp")}
    t_csf = SHELLS_MM["csf"] * factors["csf"]
    t_skull = t_csf + SHELLS_MM["skull"] * factors["skull"]
    t_fat = t_skull + SHELLS_MM["fat"] * factors["fat"]
    t_scalp = t_fat + SHELLS_MM["scalp"] * factors["scalp"]
    shell = (outside > 0) & (out == 0)
    out[shell & (outside <= t_csf)] = GEN_CSF
    skull = shell & (outside > t_csf) & (outside <= t_skull)
    out[skull] = GEN_SKULL
    diploe_lo = t_csf + 0.3 * (t_skull - t_csf)
    diploe_hi = t_csf + 0.7 * (t_skull - t_csf)
    out[skull & (outside > diploe_lo) & (outside <= diploe_hi)] = GEN_MARROW
    out[shell & (outside > t_skull) & (outside <= t_fat)] = GEN_FAT
    out[shell & (outside > t_fat) & (outside <= t_scalp)] = GEN_SCALP
    return out


def mni_generation_labels(rng: np.random.Generator | None = None, head: bool = True) -> sitk.Image:
    """Generation labels on the (padded) MNI152 1 mm grid: brain tissues, DK structures, head layers."""
    rng = rng if rng is not None else np.random.default_rng(0)
    t1 = sitk.DICOMOrient(mni152.load_mni152_t1(), "LPS")
    reference = _pad(t1) if head else t1
    brain = sitk.GetArrayFromImage(resample_like(sitk.DICOMOrient(mni152.load_mni152_brain_mask(), "LPS"), reference, nearest=True)) > 0
    gm = sitk.GetArrayFromImage(resample_like(mni152.load_mni152_probability("gm"), reference, nearest=False))
    wm = sitk.GetArrayFromImage(resample_like(mni152.load_mni152_probability("wm"), reference, nearest=False))
    dk = sitk.GetArrayFromImage(resample_like(abagen_donors.dk_to_generation(abagen_donors.load_mni_dk()), reference, nearest=True))
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0)  # 0 csf, 1 gm, 2 wm
    zyx = tuple(float(s) for s in reference.GetSpacing()[::-1])
    depth = ndimage.distance_transform_edt(brain, sampling=zyx)
    out = np.zeros(brain.shape, np.uint8)
    out[brain & (tissue == 0)] = GEN_CSF
    out[brain & (tissue == 0) & (depth > 8.0)] = GEN_VENTRICLE
    out[brain & (tissue == 1)] = GEN_CORTEX
    out[brain & (tissue == 2)] = GEN_CEREBRAL_WM
    # Cerebellum: brain tissue outside the (dilated) DK cerebrum hull, excluding the brainstem.
    cerebrum = (dk > 0) & (dk != GEN_BRAINSTEM)
    hull = ndimage.binary_fill_holes(ndimage.binary_closing(cerebrum, _ball(3), iterations=2))
    hull = ndimage.binary_dilation(hull, _ball(3))
    cerebellum = brain & ~hull & (tissue > 0) & (dk != GEN_BRAINSTEM)
    # keep only the large inferior-posterior component(s)
    components, count = ndimage.label(cerebellum)
    if count:
        sizes = ndimage.sum(cerebellum, components, index=range(1, count + 1))
        keep = [i + 1 for i, size in enumerate(sizes) if size >= 0.2 * max(sizes)]
        cerebellum = np.isin(components, keep)
    out[cerebellum] = GEN_CEREBELLUM
    labelled = dk > 0
    out[labelled] = dk[labelled]
    if head:
        out = add_head_layers(out, reference.GetSpacing(), rng)
    return like(out, reference)


def _hemisphere_interior(dk_generation: np.ndarray, hemisphere: np.ndarray) -> np.ndarray:
    """Voxels enclosed by one hemisphere's labels: closing, 3D and sagittal (axis i) hole filling."""
    closed = ndimage.binary_closing(hemisphere, _ball(2), iterations=1) | hemisphere
    filled = ndimage.binary_fill_holes(closed)
    for i in range(filled.shape[2]):
        filled[:, :, i] |= ndimage.binary_fill_holes(closed[:, :, i])
    for j in range(filled.shape[1]):
        filled[:, j, :] |= ndimage.binary_fill_holes(closed[:, j, :])
    return filled & (dk_generation == 0)


def register_mni_to(fixed_mask: sitk.Image, moving_mask: sitk.Image) -> sitk.Transform:
    """Affine transform mapping ``fixed_mask`` points to ``moving_mask`` (binary masks, mean squares)."""
    fixed = sitk.SmoothingRecursiveGaussian(sitk.Cast(fixed_mask, sitk.sitkFloat32), 2.0)
    moving = sitk.SmoothingRecursiveGaussian(sitk.Cast(moving_mask, sitk.sitkFloat32), 2.0)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.1, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=150)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SetInitialTransform(initial, inPlace=False)
    return method.Execute(fixed, moving)


def donor_generation_labels(
    donor: str, mni_labels: sitk.Image | None = None, rng: np.random.Generator | None = None
) -> sitk.Image:
    """Generation labels for one abagen donor on its (padded, LPS) native 1 mm grid."""
    rng = rng if rng is not None else np.random.default_rng(int(donor))
    mni_labels = mni_labels if mni_labels is not None else mni_generation_labels(head=False)
    dk_image = _pad(sitk.DICOMOrient(abagen_donors.load_donor_dk(donor), "LPS"))
    dk = sitk.GetArrayFromImage(dk_image)
    gen = sitk.GetArrayFromImage(abagen_donors.dk_to_generation(dk_image))
    # Register the MNI map's DK-labelled cerebrum onto the donor's.
    mni_array = sitk.GetArrayFromImage(mni_labels)
    cerebrum_values = [v for v in np.unique(gen) if v not in (0, GEN_BRAINSTEM)]
    moving_mask = like(np.isin(mni_array, cerebrum_values).astype(np.uint8), mni_labels)
    fixed_mask = like((gen > 0).astype(np.uint8), dk_image)
    transform = register_mni_to(fixed_mask, moving_mask)
    warped = sitk.GetArrayFromImage(sitk.Resample(mni_labels, dk_image, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8))
    out = gen.copy()
    interior = _hemisphere_interior(gen, (dk >= 1) & (dk <= 41)) | _hemisphere_interior(gen, (dk >= 42) & (dk <= 82))
    out[interior] = GEN_CEREBRAL_WM
    out[interior & (warped == GEN_VENTRICLE)] = GEN_VENTRICLE
    free = out == 0
    for value in (GEN_CEREBELLUM, GEN_BRAINSTEM):
        out[free & (warped == value)] = value
    # Unlabelled tissue enclosed by the brain but outside both hemispheres' interiors (ventral
    # diencephalon, midbrain, the medial wall): white or grey matter as the MNI152 map says, so it
    # does not become a CSF hole under the thalami.
    closed = ndimage.binary_fill_holes(ndimage.binary_closing(out > 0, _ball(3), iterations=1))
    free = (out == 0) & closed
    out[free & (warped == GEN_CORTEX)] = GEN_CORTEX
    out[free & (warped > 0) & (warped != GEN_CORTEX) & (warped != GEN_CSF) & (warped != GEN_VENTRICLE)] = GEN_CEREBRAL_WM
    out = add_head_layers(out, dk_image.GetSpacing(), rng)
    return like(out, dk_image)
