"""Volumes keep their exact geometry through every supported format; bad files fail clearly."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom

from MedSegExtension.errors import InputError
from MedSegExtension.io.atomic import atomic_output
from MedSegExtension.io.segmentation_files import read_labelmap, write_labelmap
from MedSegExtension.io.volumes import list_dicom_series, read_image, read_volume, same_geometry, write_image
from MedSegExtension.models.card import LabelInfo

OBLIQUE = tuple(sitk.VersorRigid3DTransform((0.1, -0.2, 0.15, 0.96)).GetMatrix())


def _oblique_phantom() -> sitk.Image:
    direction = np.array(OBLIQUE).reshape(3, 3)
    direction /= np.linalg.norm(direction, axis=0)  # columns unit length
    return make_phantom(direction=tuple(direction.ravel()))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".nhdr"])
def test_geometry_round_trip(tmp_path: Path, suffix: str) -> None:
    image = _oblique_phantom()
    path = tmp_path / f"volume{suffix}"
    if suffix in (".mhd", ".nhdr"):
        sitk.WriteImage(image, str(path))  # detached header + data file
    else:
        write_image(image, path)
    back = read_volume(path)
    assert back.GetSize() == image.GetSize()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def _write_dicom_series(image: sitk.Image, folder: Path, series_uid: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 1000), sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[0::3], *direction[1::3])),
            "0028|0030": f"{image.GetSpacing()[1]:.6f}\\{image.GetSpacing()[0]:.6f}",
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"{series_uid[-3:]}_{k:03d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_geometry_and_choice(tmp_path: Path) -> None:
    big = make_phantom(size=(24, 20, 12), spacing=(0.8, 0.8, 2.5), origin=(-10.0, 4.0, 30.0))
    small = make_phantom(size=(24, 20, 5), spacing=(1.0, 1.0, 3.0))
    _write_dicom_series(big, tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.100")
    _write_dicom_series(small, tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.200")
    series = list_dicom_series(tmp_path / "dicom")
    assert [len(s.files) for s in series] == [12, 5]
    chosen = read_image(tmp_path / "dicom")
    assert chosen.GetSize() == (24, 20, 12)
    np.testing.assert_allclose(chosen.GetSpacing(), (0.8, 0.8, 2.5), atol=1e-4)
    np.testing.assert_allclose(chosen.GetOrigin(), big.GetOrigin(), atol=1e-4)
    other = read_image(tmp_path / "dicom", "1.2.826.0.1.3680043.2.1125.200")
    assert other.GetSize() == (24, 20, 5)
    with pytest.raises(InputError, match="no DICOM series with UID 9.9"):
        read_image(tmp_path / "dicom", "9.9")


def test_seg_nrrd_round_trip_keeps_names_colours_and_geometry(tmp_path: Path) -> None:
    image = _oblique_phantom()
    labels = sitk.Cast(sitk.BinaryThreshold(image, 150, 1000, 2, 0), sitk.sitkUInt8)
    info = [
        LabelInfo(1, "Left blob", (255, 0, 0)),
        LabelInfo(2, "Right blob", (0, 0, 255), {"category": ["SCT", "123037004", "Anatomical Structure"],
                                                 "type": ["SCT", "11000731", "Caudate nucleus"],
                                                 "typeModifier": ["SCT", "24028007", "Right"]}),
    ]
    path = write_labelmap(labels, tmp_path / "result.seg.nrrd", info)
    back, back_info = read_labelmap(path)
    assert same_geometry(back, image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(labels))
    assert [(i.value, i.name, i.color) for i in back_info] == [(1, "Left blob", (255, 0, 0)), (2, "Right blob", (0, 0, 255))]
    assert back_info[1].terminology["typeModifier"][2] == "Right"


def test_atomic_output_leaves_nothing_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"previous result")
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_bad_volumes_fail_with_one_line_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.nii.gz"
    write_image(make_phantom(), good)
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    plain = tmp_path / "good.nii"
    write_image(make_phantom(), plain)
    truncated_plain = tmp_path / "truncated.nii"
    truncated_plain.write_bytes(plain.read_bytes()[:-1000])
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10\n\n")
    empty = tmp_path / "empty.nii"
    empty.write_bytes(b"")
    cases = {
        tmp_path / "missing.nii.gz": "no such file",
        truncated: "truncated",
        truncated_plain: "truncated",
        garbage: "cannot read image",
        empty: "file is empty",
    }
    for path, problem in cases.items():
        with pytest.raises(InputError) as info:
            read_volume(path)
        message = str(info.value)
        assert str(path) in message and problem in message and "\n" not in message


def test_volume_content_checks(tmp_path: Path) -> None:
    flat = sitk.Image(16, 16, 1, sitk.sitkFloat32)
    flat[0, 0, 0] = 1.0
    nan = make_phantom()
    nan[3, 3, 3] = float("nan")
    constant = sitk.Image(8, 8, 8, sitk.sitkInt16) + 7
    volume4d = sitk.JoinSeries([make_phantom(), make_phantom(seed=1)])
    anisotropic = make_phantom(spacing=(0.4, 0.4, 12.0))
    expected = {
        "flat.nii.gz": (flat, "single slice"),
        "nan.mha": (nan, "NaN or infinite"),
        "constant.nii.gz": (constant, "every voxel has the value 7"),
        "volume4d.nii.gz": (volume4d, "expected a 3D volume, got 4D"),
        "anisotropic.nii.gz": (anisotropic, "extreme anisotropy"),
    }
    for name, (image, problem) in expected.items():
        path = tmp_path / name
        sitk.WriteImage(image, str(path))
        with pytest.raises(InputError, match=problem):
            read_volume(path)
            pytest.fail(f"{name} was accepted")


def test_gzip_of_garbage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "noise.nii.gz"
    path.write_bytes(gzip.compress(np.random.default_rng(0).bytes(4096)))
    with pytest.raises(InputError, match="cannot read image"):
        read_volume(path)
