"""Hostile and careless input (#11): refused at once, with one line naming the file and the problem.

The files are crafted by :mod:`hostile_files` into each test's ``tmp_path``; the commands run
through the real CLI entry point.
"""

from __future__ import annotations

import time
from pathlib import Path

import hostile_files as hostile
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom

from MedSegExtension.cli.main import main
from MedSegExtension.errors import InputError
from MedSegExtension.io.quiet import first_line
from MedSegExtension.io.volumes import read_image, write_image
from MedSegExtension.limits import set_memory_limit


@pytest.fixture
def registry_env(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDSEG_BUNDLED_MODELS", str(tiny_model_dir.parent))
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MEDSEG_MAX_MEMORY_GB", raising=False)
    yield tiny_model_dir
    set_memory_limit(None)


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    path = tmp_path / "head.nii.gz"
    sitk.WriteImage(make_phantom(), str(path))
    return path


def refused(capfd: pytest.CaptureFixture, *args: object) -> str:
    """Run the CLI; assert exit 2 with exactly one line on stderr (C-level output included); return it."""
    code = main([str(a) for a in args])
    err = capfd.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_headers_claiming_more_voxels_than_data_or_memory_are_refused_before_reading(registry_env, tmp_path, capfd):
    output = tmp_path / "out.nii.gz"
    started = time.monotonic()
    line = refused(capfd, "predict", hostile.nrrd_claiming(tmp_path, (100000,) * 3), "-o", output)
    assert "100000×100000×100000" in line and "GB of memory, above the limit" in line
    line = refused(capfd, "predict", hostile.nrrd_claiming(tmp_path, (1500,) * 3, pixel="uchar", name="u8.nrrd"), "-o", output)
    assert "truncated (1024 of 3375000000 bytes" in line
    gz = hostile.nrrd_claiming(tmp_path, (1500,) * 3, pixel="uchar", encoding="gzip", name="gz.nrrd")
    assert "truncated or implausible" in refused(capfd, "predict", gz, "-o", output)
    line = refused(capfd, "predict", hostile.mha_claiming(tmp_path, (1500,) * 3), "-o", output, "--max-memory", "4")
    assert "12.6 GB of memory, above the limit of 4 GB" in line and "--max-memory" in line
    assert time.monotonic() - started < 10  # nothing was allocated
    assert not output.exists()


def test_memory_limit_comes_from_the_environment_or_the_option(registry_env, volume, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("MEDSEG_MAX_MEMORY_GB", "0.0001")
    line = refused(capfd, "predict", volume, "-o", tmp_path / "a.nii.gz")
    assert "40×36×32 volume" in line and "limit of 0.0001 GB" in line and "MEDSEG_MAX_MEMORY_GB" in line
    monkeypatch.setenv("MEDSEG_MAX_MEMORY_GB", "lots")
    assert "MEDSEG_MAX_MEMORY_GB='lots': not a number" in refused(capfd, "predict", volume, "-o", tmp_path / "a.nii.gz")
    monkeypatch.delenv("MEDSEG_MAX_MEMORY_GB")
    assert "--max-memory='-1': must be a positive" in refused(capfd, "predict", volume, "-o", tmp_path / "a.nii.gz",
                                                              "--max-memory", "-1")
    assert main(["predict", str(volume), "-o", str(tmp_path / "ok.nii.gz"), "--max-memory", "2"]) == 0


def test_card_spacing_that_blows_up_the_working_grid_is_refused_with_the_number(registry_env, tmp_path, capfd):
    coarse = hostile.with_spacing(tmp_path, (30.0, 30.0, 30.0))  # 24³ voxels of 30 mm → 360³ at the card's 2 mm
    line = refused(capfd, "predict", coarse, "-o", tmp_path / "o.nii.gz", "--max-memory", "1")
    assert "at the model's 2×2×2 mm spacing of 360×360×360 voxels would need 1.74 GB" in line
    assert "above the limit of 1 GB" in line


@pytest.mark.parametrize("spacing", [(1e-30, 1e-30, 1e-30), (1e6, 1e6, 1e6)])
def test_implausible_spacing_is_refused(registry_env, tmp_path, capfd, spacing):
    line = refused(capfd, "predict", hostile.with_spacing(tmp_path, spacing), "-o", tmp_path / "o.nii.gz")
    assert "implausible voxel spacing" in line and "0.001 to 100 mm" in line
    assert not (tmp_path / "o.nii.gz").exists()


def test_transforms_that_scale_or_degenerate_are_refused_before_resampling(registry_env, volume, tmp_path, capfd):
    output = tmp_path / "o.nii.gz"
    shrink = hostile.transform_file(tmp_path, np.diag([0.1, 0.1, 0.1]), "shrink.txt")  # frame grid 10× per axis
    line = refused(capfd, "predict", volume, "-o", output, "--transform", shrink, "--max-memory", "0.1")
    assert line.startswith("medseg: error: --transform: a 391×351×311 volume would need") and "limit of 0.1 GB" in line
    flat = hostile.transform_file(tmp_path, np.diag([1.0, 1.0, 1e-5]), "flat.txt")
    for extra in ((), ("--invert",)):
        line = refused(capfd, "predict", volume, "-o", output, "--transform", flat, *extra)
        assert "transform is degenerate (condition number 1e+05, limit 1000)" in line
    squash = hostile.transform_file(tmp_path, np.diag([1.0, 1.0, 20.0]), "squash.txt")
    line = refused(capfd, "predict", volume, "-o", output, "--transform", squash)
    assert "only 40×36×3 voxels (minimum 8 per axis)" in line
    assert not output.exists()


def test_working_grid_below_the_window_minimum_is_refused(registry_env, tmp_path, capfd):
    image = make_phantom(size=(40, 36, 6), spacing=(1.0, 1.0, 1.0))  # 6 mm thick → 3 voxels at 2 mm
    path = tmp_path / "slab.nii.gz"
    sitk.WriteImage(image, str(path))
    line = refused(capfd, "predict", path, "-o", tmp_path / "o.nii.gz")
    assert "20×18×3 voxels, below the minimum 8×8×8" in line


@pytest.mark.parametrize("maker", [hostile.sheared_nrrd, hostile.sheared_nifti])
def test_sheared_direction_is_refused_with_the_reason(registry_env, tmp_path, capfd, maker):
    line = refused(capfd, "predict", maker(tmp_path), "-o", tmp_path / "o.nii.gz")
    assert "voxel axes are not perpendicular (shear 0.287, tolerance 0.001" in line and "gantry-tilted" in line
    assert "WARNING" not in line  # ITK's "unexpected scales in sform" is silenced


def test_negligible_shear_is_accepted(tmp_path):
    assert read_image(hostile.sheared_nifti(tmp_path, shear=1e-5)).GetSize() == (12, 12, 12)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nan_and_inf_in_nifti_are_refused(registry_env, tmp_path, capfd, suffix):
    assert "2 voxels are NaN or infinite" in refused(capfd, "predict", hostile.nifti_with_non_finite(tmp_path, suffix),
                                                     "-o", tmp_path / "o.nii.gz")


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz"])
def test_complex_volumes_are_refused_as_complex_not_truncated(registry_env, tmp_path, capfd, suffix):
    line = refused(capfd, "predict", hostile.complex_volume(tmp_path, suffix), "-o", tmp_path / "o.nii.gz")
    assert "complex-valued voxels are not supported" in line and "truncated" not in line


def test_truncated_metaimage_says_truncated(registry_env, tmp_path, capfd):
    line = refused(capfd, "predict", hostile.truncated_mha(tmp_path), "-o", tmp_path / "o.nii.gz")
    assert "truncated (6412 of 6912 bytes" in line and "No such file" not in line


def test_dicom_series_with_a_missing_slice_is_refused_naming_the_position(registry_env, tmp_path, capfd):
    series = hostile.dicom_with_missing_slice(tmp_path / "gap")
    line = refused(capfd, "predict", series, "-o", tmp_path / "o.nii.gz")
    assert "DICOM series 1.2.826.0.1.3680043.2.1125.1" in line and "1 slice missing at 10.00 mm" in line
    assert "slices are 2.5 mm apart but 5 mm" in line


def test_dicom_series_with_a_corrupt_slice_names_the_file(registry_env, tmp_path, capfd):
    series = hostile.dicom_with_corrupt_slice(tmp_path / "corrupt")
    line = refused(capfd, "predict", series, "-o", tmp_path / "o.nii.gz")
    assert str(series / "004.dcm") in line and "unreadable" in line


def test_gantry_tilted_dicom_series_is_refused_as_shear(registry_env, tmp_path, capfd):
    line = refused(capfd, "predict", hostile.dicom_series(tmp_path / "tilt", tilt=0.2), "-o", tmp_path / "o.nii.gz")
    assert "DICOM series 1.2.826.0.1.3680043.2.1125.1: the voxel axes are not perpendicular (shear 0.2" in line


def test_complete_dicom_series_reads_with_its_spacing(tmp_path):
    image = read_image(hostile.dicom_series(tmp_path / "ok"))
    assert image.GetSize() == (16, 16, 8) and np.allclose(image.GetSpacing(), (1, 1, 2.5))


def test_two_equally_large_series_are_not_chosen_silently(registry_env, tmp_path, capfd):
    folder = hostile.two_equal_dicom_series(tmp_path / "study")
    line = refused(capfd, "predict", folder, "-o", tmp_path / "o.nii.gz")
    assert "2 DICOM series of equal size" in line and "pick one with --series" in line
    assert "1.2.826.0.1.3680043.2.1125.7 ('T1 axial', 8 slices)" in line
    assert "1.2.826.0.1.3680043.2.1125.8 ('T1 axial repeat', 8 slices)" in line
    assert read_image(folder, "1.2.826.0.1.3680043.2.1125.8").GetSize() == (16, 16, 8)


@pytest.mark.parametrize(("option", "name", "problem"), [
    ("--probabilities", "p.png", "unsupported format '.png'"),
    ("--uncertainty", "u.txt", "unsupported format '.txt'"),
    ("--probabilities", "p.seg.nrrd", ".seg.nrrd is for segmentations; write this float map as .nrrd"),
])
def test_output_formats_are_checked_before_any_work(registry_env, tmp_path, capfd, option, name, problem):
    missing_input = tmp_path / "not-read-yet.nii.gz"  # the format is refused before the input is even opened
    line = refused(capfd, "predict", missing_input, "-o", tmp_path / "o.nii.gz", option, tmp_path / name)
    assert problem in line and str(tmp_path / name) in line


def test_float_maps_are_never_written_as_seg_nrrd(tmp_path):
    with pytest.raises(InputError, match="is for segmentations"):
        write_image(make_phantom(), tmp_path / "p.seg.nrrd")
    assert not (tmp_path / "p.seg.nrrd").exists()


@pytest.fixture
def annotated(tmp_path: Path):
    image = hostile.volume((12, 12, 12))
    path = tmp_path / "image.nii.gz"
    sitk.WriteImage(image, str(path))
    return path, image


@pytest.mark.parametrize(("spec", "problem"), [
    ("k:--1", "slice index '--1' in 'k:--1' is not a whole number"),
    ("k:4-0", "slice index '4-0' in 'k:4-0' is not a whole number"),
    ("k:-", "slice index '-' in 'k:-' is not a whole number"),
    ("", "--slices: no slice given"),
])
def test_bad_slice_specs_are_one_line_errors(registry_env, annotated, tmp_path, capfd, spec, problem):
    path, image = annotated
    labels = hostile.label_map_with(tmp_path, image, 1, "labels.nii.gz")
    line = refused(capfd, "finetune", path, "--labels", labels, "--slices", spec, "--name", "x")
    assert problem in line and "--scribbles" not in line


@pytest.mark.parametrize("value", [-1, 70000])
def test_label_values_out_of_range_are_refused_before_training(registry_env, annotated, tmp_path, capfd, value):
    path, image = annotated
    labels = hostile.label_map_with(tmp_path, image, value, f"labels{value}.nii.gz")
    line = refused(capfd, "finetune", path, "--labels", labels, "--slices", "k:4", "--name", "x")
    assert f"label value {value} is outside 0..65535" in line and str(labels) in line
    assert not (tmp_path / "home" / "models").exists()


def test_evaluate_report_on_a_file_is_refused(registry_env, tmp_path, capfd):
    labels = hostile.label_map_with(tmp_path, hostile.volume(), 2, "a.nii.gz")
    report = tmp_path / "report.html"
    report.write_text("someone's report")
    line = refused(capfd, "evaluate", labels, labels, "--report", report)
    assert "--report" in line and "folder" in line
    assert report.read_text() == "someone's report"


def test_truncated_hdf5_transform_is_one_line_without_hdf5_diagnostics(registry_env, volume, tmp_path, capfd):
    good = tmp_path / "good.h5"
    sitk.WriteTransform(sitk.Euler3DTransform(), str(good))
    broken = tmp_path / "broken.h5"
    broken.write_bytes(good.read_bytes()[:400])
    line = refused(capfd, "predict", volume, "-o", tmp_path / "o.nii.gz", "--transform", broken)
    assert "cannot read transform" in line and "HDF5" not in line


def test_itk_messages_lose_source_locations_and_matrix_dumps():
    try:
        sitk.Image(2, 2, 2, sitk.sitkFloat32).SetDirection((1, 0, 0, 1, 0, 0, 0, 0, 1))
    except RuntimeError as exc:
        assert first_line(exc) == "Bad direction, determinant is 0. Refusing to change direction"
    text = ("Exception thrown in SimpleITK ImageFileReader_Execute: /work/src/Code/IO/src/sitkImageReaderBase.cxx:99:\n"
            "sitk::ERROR: Unable to determine ImageIO reader for \"x.nrrd\" (0 0 1)")
    assert first_line(RuntimeError(text)) == 'Unable to determine ImageIO reader for "x.nrrd"'


def test_nonlinear_transform_message_does_not_hint_at_an_option_that_does_not_exist(volume):
    from MedSegExtension.transforms import frame_grid

    bspline = sitk.BSplineTransformInitializer(sitk.ReadImage(str(volume)), (2, 2, 2))
    with pytest.raises(InputError) as caught:
        frame_grid(sitk.ReadImage(str(volume)), bspline)
    assert "reference grid" not in str(caught.value) and "linear" in str(caught.value)


def test_quiet_sections_nest_and_give_stderr_back(capfd):
    import os

    from MedSegExtension.io.quiet import quiet_itk

    with quiet_itk():
        with quiet_itk():
            os.write(2, b"hidden\n")
        os.write(2, b"hidden too\n")
    os.write(2, b"visible\n")
    assert capfd.readouterr().err == "visible\n"


def test_a_cards_huge_window_is_refused_before_allocating(registry_env, volume, tmp_path, capfd):
    import json

    card_file = registry_env / "model.json"
    card = json.loads(card_file.read_text())
    card["window_size"] = [2000, 2000, 2000]
    card_file.write_text(json.dumps(card))
    line = refused(capfd, "predict", volume, "-o", tmp_path / "o.nii.gz")
    assert "2000×2000×2000 voxels would need" in line and "above the limit" in line
