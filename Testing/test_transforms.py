"""ITK transform files and the rotated frame (seed 003), against analytic answers and real ITK.

Files are generated at test time: by SimpleITK, by the PyPI ``itk`` package (the same
``itk::TransformFileWriter`` ITK-SNAP uses) and by hand in ITK-SNAP's exact text form.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom

from MedSegExtension.errors import InputError
from MedSegExtension.transforms import (
    Grid,
    affine_matrix,
    euler_angles_zyx,
    frame_grid,
    itk_snap_text,
    linear_parts,
    read_transform,
    resample_back,
    resample_into_frame,
    rotation_from_euler_zyx,
    rotation_part,
    slicer_to_parent_ras_matrix,
    to_ras_matrix,
    transform_from_slicer_to_parent_ras,
    write_transform,
)
from MedSegExtension.transforms.resampling import inverse_transform

pytestmark = pytest.mark.filterwarnings("ignore:builtin type .* has no __module__ attribute:DeprecationWarning")

ANGLES = (10.0, -20.0, 30.0)  # rx, ry, rz in degrees
SHIFT = np.array([4.0, -3.0, 6.0])  # translation of the test transform, LPS mm
F = np.diag([-1.0, -1.0, 1.0, 1.0])


# ---------------------------------------------------------------- analytic helpers


def zyx_closed_form(rx: float, ry: float, rz: float) -> np.ndarray:
    """Rz·Ry·Rx written out entry by entry (independent of the product in the engine)."""
    a, b, c = (math.radians(v) for v in (rx, ry, rz))
    ca, sa, cb, sb, cc, sc = math.cos(a), math.sin(a), math.cos(b), math.sin(b), math.cos(c), math.sin(c)
    return np.array(
        [
            [cc * cb, cc * sb * sa - sc * ca, cc * sb * ca + sc * sa],
            [sc * cb, sc * sb * sa + cc * ca, sc * sb * ca - cc * sa],
            [-sb, cb * sa, cb * ca],
        ]
    )


def seed003_text(matrix: np.ndarray, translation: np.ndarray) -> str:
    """ITK-SNAP's file as seed 003 describes it, typed out by hand."""
    numbers = " ".join(f"{v:.17g}" for v in [*np.ravel(matrix), *translation])
    return (
        "#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n"
        f"Parameters: {numbers}\nFixedParameters: 0 0 0\n"
    )


def physical_points(image: sitk.Image) -> np.ndarray:
    """LPS coordinates of every voxel centre, shape (z, y, x, 3)."""
    size = image.GetSize()
    k, j, i = np.meshgrid(*(np.arange(n, dtype=float) for n in size[::-1]), indexing="ij")
    index = np.stack([i, j, k], axis=-1) * np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    return np.array(image.GetOrigin()) + index @ direction.T


def marker_image(point: np.ndarray, *, spacing=(1.2, 1.0, 1.5), direction=None, sigma: float = 2.5) -> sitk.Image:
    """A dark volume with one Gaussian marker centred at the LPS ``point`` (off the voxel centres)."""
    image = make_phantom(size=(44, 40, 34), spacing=spacing, origin=(-25.0, -18.0, -20.0), direction=direction)
    distance2 = ((physical_points(image) - point) ** 2).sum(axis=-1)
    marker = sitk.GetImageFromArray((1000.0 * np.exp(-distance2 / (2 * sigma**2))).astype(np.float32))
    marker.CopyInformation(image)
    return marker


def centroid(image: sitk.Image) -> np.ndarray:
    weights = sitk.GetArrayFromImage(image).astype(float)
    weights[weights < 100] = 0  # ignore the interpolation haze at the edges
    points = physical_points(image)
    return (points * weights[..., None]).sum(axis=(0, 1, 2)) / weights.sum()


def image_centre(image: sitk.Image) -> np.ndarray:
    return np.array(image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()]))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def euler_zyx(angles=ANGLES, center=(0.0, 0.0, 0.0), translation=SHIFT) -> sitk.Euler3DTransform:
    transform = sitk.Euler3DTransform()
    transform.SetComputeZYX(True)
    transform.SetCenter(tuple(center))
    transform.SetRotation(*(math.radians(a) for a in angles))
    transform.SetTranslation(tuple(float(v) for v in translation))
    return transform


def assert_same_map(a: sitk.Transform, b: sitk.Transform, atol: float = 1e-9) -> None:
    rng = np.random.default_rng(7)
    for point in rng.uniform(-150, 150, size=(6, 3)):
        p = tuple(float(v) for v in point)
        np.testing.assert_allclose(a.TransformPoint(p), b.TransformPoint(p), atol=atol)


# ---------------------------------------------------------------- real ITK files


@pytest.fixture(scope="module")
def itk_written(tmp_path_factory) -> dict:
    """Files written by real ITK (itk::TransformFileWriter, as in ITK-SNAP) and ITK's own point maps."""
    itk = pytest.importorskip("itk", reason="the PyPI 'itk' package is needed to write real ITK-SNAP files")
    folder = tmp_path_factory.mktemp("itk")
    rotation = zyx_closed_form(*ANGLES)

    def params(values):
        array = itk.OptimizerParameters[itk.D](len(values))
        for index, value in enumerate(values):
            array[index] = float(value)
        return array

    snap = itk.MatrixOffsetTransformBase[itk.D, 3, 3].New()
    snap.SetParameters(params([*rotation.ravel(), *SHIFT]))
    centred = itk.AffineTransform[itk.D, 3].New()
    centred.SetFixedParameters(params([5.0, -7.0, 12.0]))
    centred.SetParameters(params([1.1, 0.2, 0.0, -0.1, 0.9, 0.05, 0.0, 0.1, 1.2, 3.0, 2.0, 1.0]))
    files = {}
    for name, transform in (("snap", snap), ("centred", centred)):
        for suffix in (".txt", ".h5"):
            path = folder / f"{name}{suffix}"
            itk.transformwrite([transform], str(path))
            files[f"{name}{suffix}"] = path
    probe = [(-12.0, 30.5, 7.25), (0.0, 0.0, 0.0), (88.0, -41.0, 120.0)]
    mapped = {name: [list(t.TransformPoint(p)) for p in probe] for name, t in (("snap", snap), ("centred", centred))}

    def motb(numbers: list[float], fixed: list[float]):
        transform = itk.MatrixOffsetTransformBase[itk.D, 3, 3].New()
        transform.SetFixedParameters(params(fixed))
        transform.SetParameters(params(numbers))
        return transform

    return {"files": files, "probe": probe, "mapped": mapped, "motb": motb}


@pytest.mark.slow  # first use of the itk package loads its modules (~10 s)
def test_itk_snap_file_from_real_itk_matches_hand_written_and_analytic(itk_written, tmp_path):
    files = itk_written["files"]
    text = files["snap.txt"].read_text(encoding="utf-8")
    assert "Transform: MatrixOffsetTransformBase_double_3_3" in text
    hand = tmp_path / "seed003.txt"
    hand.write_text(seed003_text(zyx_closed_form(*ANGLES), SHIFT))

    expected = np.eye(4)
    expected[:3, :3] = zyx_closed_form(*ANGLES)
    expected[:3, 3] = SHIFT
    for path in (files["snap.txt"], files["snap.h5"], hand):
        transform = read_transform(path)
        assert transform.GetName() == "AffineTransform", path
        np.testing.assert_allclose(affine_matrix(transform), expected, atol=1e-12)
        np.testing.assert_allclose(euler_angles_zyx(affine_matrix(transform)), ANGLES, atol=1e-9)
        for point, itk_result in zip(itk_written["probe"], itk_written["mapped"]["snap"], strict=True):
            np.testing.assert_allclose(transform.TransformPoint(point), itk_result, atol=1e-9)


@pytest.mark.slow  # first use of the itk package loads its modules (~10 s)
def test_centre_of_itk_affine_is_honoured(itk_written):
    for key in ("centred.txt", "centred.h5"):
        transform = read_transform(itk_written["files"][key])
        for point, itk_result in zip(itk_written["probe"], itk_written["mapped"]["centred"], strict=True):
            np.testing.assert_allclose(transform.TransformPoint(point), itk_result, atol=1e-9)
        matrix, translation, center = linear_parts(transform)
        np.testing.assert_allclose(center, [5.0, -7.0, 12.0])
        np.testing.assert_allclose(translation, [3.0, 2.0, 1.0])
        np.testing.assert_allclose(matrix[0], [1.1, 0.2, 0.0])


@pytest.mark.slow  # first use of the itk package loads its modules (~10 s)
def test_itk_snap_form_written_by_us_reads_in_real_itk(itk_written, tmp_path):
    transform = euler_zyx(center=(3.0, 4.0, -5.0))
    path = write_transform(transform, tmp_path / "out.tfm", itk_snap=True)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#Insight Transform File V1.0"
    assert lines[2] == "Transform: MatrixOffsetTransformBase_double_3_3"
    assert lines[3].startswith("Parameters: ") and lines[4] == "FixedParameters: 0 0 0"
    # ITK's Python reader has no factory entry for this type (ITK-SNAP registers its own), so
    # give ITK the written numbers and let it map the points.
    numbers = [float(v) for v in lines[3].split()[1:]]
    assert len(numbers) == 12
    itk_transform = itk_written["motb"](numbers, [0.0, 0.0, 0.0])
    for point in itk_written["probe"]:
        np.testing.assert_allclose(list(itk_transform.TransformPoint(point)), transform.TransformPoint(point), atol=1e-9)
    assert_same_map(read_transform(path), transform)
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


# ---------------------------------------------------------------- every type, every format


def _all_types() -> list[sitk.Transform]:
    rng = np.random.default_rng(3)
    euler_xyz = euler_zyx()
    euler_xyz.SetComputeZYX(False)
    affine = sitk.AffineTransform(3)
    affine.SetCenter((10.0, -20.0, 5.0))
    affine.SetMatrix(tuple((np.eye(3) + rng.normal(0, 0.1, (3, 3))).ravel()))
    affine.SetTranslation((1.0, 2.0, 3.0))
    versor = sitk.VersorRigid3DTransform((0.1, 0.2, 0.3), 0.4, (1.0, -2.0, 3.0), (5.0, 6.0, 7.0))
    similarity = sitk.Similarity3DTransform(1.3, (0.0, 0.6, 0.8), 0.3, (1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    scale_versor = sitk.ScaleVersor3DTransform((1.1, 0.9, 1.2), (0.0, 0.0, 1.0), 0.5, (1.0, 1.0, 1.0))
    scale_versor.SetCenter((2.0, 3.0, 4.0))
    skew = sitk.ScaleSkewVersor3DTransform()
    skew.SetParameters((0.1, -0.1, 0.05, 1.0, 2.0, 3.0, 1.1, 0.9, 1.0, 0.05, 0.0, 0.02, 0.0, 0.0, 0.01))
    skew.SetCenter((1.0, 2.0, 3.0))
    return [
        affine,
        euler_zyx(center=(1.0, 2.0, 3.0)),
        euler_xyz,
        versor,
        similarity,
        sitk.TranslationTransform(3, (10.0, -5.0, 2.5)),
        scale_versor,
        skew,
        sitk.ScaleTransform(3, (1.5, 0.8, 1.1)),
    ]


@pytest.mark.parametrize("suffix", [".txt", ".tfm", ".h5", ".mat"])
def test_every_linear_type_reads_as_itk_maps_it(tmp_path, suffix):
    for index, original in enumerate(_all_types()):
        path = tmp_path / f"t{index}{suffix}"
        sitk.WriteTransform(original, str(path))
        transform = read_transform(path)
        assert transform.GetName() == original.GetName(), path.read_bytes()[:200]
        assert_same_map(transform, sitk.ReadTransform(str(path)))
        assert_same_map(transform, original)


def test_composites_are_flattened(tmp_path):
    parts = [euler_zyx(center=(5.0, 5.0, 5.0)), sitk.TranslationTransform(3, (1.0, 2.0, 3.0)), _all_types()[0]]
    composite = sitk.CompositeTransform(parts)
    for suffix in (".txt", ".h5"):
        path = tmp_path / f"composite{suffix}"
        sitk.WriteTransform(composite, str(path))
        transform = read_transform(path)
        assert transform.GetName() == "AffineTransform"
        assert_same_map(transform, composite)
    matrix = affine_matrix(composite)
    for point in ((1.0, 2.0, 3.0), (-40.0, 25.0, 90.0)):
        np.testing.assert_allclose(matrix @ [*point, 1.0], [*composite.TransformPoint(point), 1.0], atol=1e-9)
    single = tmp_path / "single.txt"
    sitk.WriteTransform(sitk.CompositeTransform([parts[0]]), str(single))
    assert read_transform(single).GetName() == "Euler3DTransform"


def test_non_linear_composite_kept_and_needs_a_reference(tmp_path):
    bspline = sitk.BSplineTransform(3, 3)
    bspline.SetTransformDomainOrigin((-30.0, -30.0, -30.0))
    bspline.SetTransformDomainPhysicalDimensions((60.0, 60.0, 60.0))
    bspline.SetTransformDomainMeshSize((2, 2, 2))
    bspline.SetParameters(tuple(np.random.default_rng(1).normal(0, 1.5, len(bspline.GetParameters()))))
    composite = sitk.CompositeTransform([euler_zyx(), sitk.TranslationTransform(3, (1.0, 0.0, 0.0)), bspline])
    path = tmp_path / "bspline.txt"
    sitk.WriteTransform(composite, str(path))
    transform = read_transform(path)
    assert isinstance(transform, sitk.CompositeTransform) and transform.GetNumberOfTransforms() == 2
    assert_same_map(transform, composite)
    with pytest.raises(InputError, match="not a linear transform"):
        affine_matrix(transform)
    image = make_phantom(size=(16, 16, 16))
    with pytest.raises(InputError, match="not linear"):
        resample_into_frame(image, transform)
    assert resample_into_frame(image, transform, reference=image).GetSize() == image.GetSize()


# ---------------------------------------------------------------- bad input


def _bad_files(folder: Path) -> dict[str, Path]:
    h = "#Insight Transform File V1.0\n#Transform 0\n"
    good = seed003_text(np.eye(3), np.array([1.0, 2.0, 3.0]))
    texts = {
        "eleven.txt": h + "Transform: MatrixOffsetTransformBase_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 1 2\nFixedParameters: 0 0 0\n",
        "thirteen.txt": h + "Transform: AffineTransform_double_3_3\nParameters: 1 0 0 0 1 0 0 0 1 1 2 3 4\nFixedParameters: 0 0 0\n",
        "garbage.txt": "this is not a transform\nat all\n",
        "truncated.txt": good[: good.index("FixedParameters") + 5],
        "no_fixed.tfm": good[: good.index("FixedParameters")],
        "not_number.txt": good.replace("Parameters: 1", "Parameters: one", 1),
        "nan.txt": good.replace("Parameters: 1", "Parameters: nan", 1),
        "unknown.txt": good.replace("MatrixOffsetTransformBase", "WarpDriveTransform"),
        "two_d.txt": h + "Transform: MatrixOffsetTransformBase_double_2_2\nParameters: 1 0 0 1 5 6\nFixedParameters: 0 0\n",
        "singular.txt": seed003_text(np.zeros((3, 3)), np.zeros(3)),
        "two_without_header.txt": good + good.replace("#Transform 0", "#Transform 1").replace(h.splitlines()[0], ""),
        "empty.txt": "",
    }
    files = {}
    for name, text in texts.items():
        files[name] = folder / name
        files[name].write_text(text)
    sitk.WriteTransform(euler_zyx(), str(folder / "whole.h5"))
    data = (folder / "whole.h5").read_bytes()
    files["truncated.h5"] = folder / "truncated.h5"
    files["truncated.h5"].write_bytes(data[: len(data) // 2])
    files["text_as.h5"] = folder / "text_as.h5"
    files["text_as.h5"].write_text(good)
    files["binary.txt"] = folder / "binary.txt"
    files["binary.txt"].write_bytes(data)
    files["two_d.h5"] = folder / "two_d.h5"
    sitk.WriteTransform(sitk.Euler2DTransform((1.0, 2.0), 0.3), str(files["two_d.h5"]))
    files["missing.txt"] = folder / "missing.txt"
    files["suffix.xfm"] = folder / "suffix.xfm"
    files["suffix.xfm"].write_text(good)
    files["folder.txt"] = folder / "folder.txt"
    files["folder.txt"].mkdir()
    return files


BAD_REASONS = {
    "eleven.txt": "needs 12 parameters, found 11",
    "thirteen.txt": "needs 12 parameters, found 13",
    "garbage.txt": "not 'Tag: value'",
    "truncated.txt": "truncated",
    "no_fixed.tfm": "no 'FixedParameters:' line",
    "not_number.txt": "'one' is not a number",
    "nan.txt": "not finite",
    "unknown.txt": "unsupported transform type WarpDriveTransform_double_3_3",
    "two_d.txt": "2D transform",
    "singular.txt": "singular",
    "two_without_header.txt": "without a CompositeTransform header",
    "empty.txt": "empty",
    "truncated.h5": "truncated",
    "text_as.h5": "not an HDF5 file",
    "binary.txt": "HDF5 file",
    "two_d.h5": "2D transform",
    "missing.txt": "no such file",
    "suffix.xfm": "unsupported transform file type",
    "folder.txt": "folder",
}


def test_bad_files_raise_one_line_input_errors(tmp_path):
    files = _bad_files(tmp_path)
    assert set(files) == set(BAD_REASONS)
    for name, path in files.items():
        with pytest.raises(InputError) as caught:
            read_transform(path)
        message = str(caught.value)
        assert message.startswith(f"{path}:") and "\n" not in message, message
        assert BAD_REASONS[name] in message, (name, message)


def test_write_refuses_bad_requests_and_keeps_old_file(tmp_path):
    target = tmp_path / "kept.txt"
    target.write_text("old")
    with pytest.raises(InputError, match="2D"):
        write_transform(sitk.Euler2DTransform(), target)
    with pytest.raises(InputError, match="text"):
        write_transform(euler_zyx(), tmp_path / "snap.h5", itk_snap=True)
    assert target.read_text(encoding="utf-8") == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"]


# ---------------------------------------------------------------- Euler angles


def test_euler_zyx_matches_itk_and_the_closed_form():
    rng = np.random.default_rng(11)
    for rx, ry, rz in rng.uniform(-180, 180, size=(50, 3)):
        ry = ry / 2
        expected = zyx_closed_form(rx, ry, rz)
        np.testing.assert_allclose(rotation_from_euler_zyx(rx, ry, rz), expected, atol=1e-12)
        itk_matrix = np.array(euler_zyx((rx, ry, rz)).GetMatrix()).reshape(3, 3)
        np.testing.assert_allclose(itk_matrix, expected, atol=1e-12)


def test_euler_round_trip_many_angles_and_gimbal_lock():
    rng = np.random.default_rng(5)
    for rx, ry, rz in rng.uniform([-179.9, -89.5, -179.9], [179.9, 89.5, 179.9], size=(500, 3)):
        np.testing.assert_allclose(euler_angles_zyx(zyx_closed_form(rx, ry, rz)), (rx, ry, rz), atol=1e-7)
    for ry in (90.0, -90.0):
        for rx, rz in rng.uniform(-170, 170, size=(20, 2)):
            matrix = zyx_closed_form(rx, ry, rz)
            angles = euler_angles_zyx(matrix)
            assert angles[0] == 0.0 and abs(angles[1] - ry) < 1e-6
            np.testing.assert_allclose(zyx_closed_form(*angles), matrix, atol=1e-9)


def test_ras_angles_flip_rx_and_ry():
    lps = np.eye(4)
    lps[:3, :3] = zyx_closed_form(*ANGLES)
    np.testing.assert_allclose(euler_angles_zyx(to_ras_matrix(lps)), (-ANGLES[0], -ANGLES[1], ANGLES[2]), atol=1e-9)


def test_rotation_part_and_refusals():
    rotation = zyx_closed_form(*ANGLES)
    scaled = rotation @ np.diag([1.2, 0.8, 1.5])
    np.testing.assert_allclose(rotation_part(scaled), rotation, atol=1e-12)
    np.testing.assert_allclose(euler_angles_zyx(rotation_part(scaled)), ANGLES, atol=1e-9)
    with pytest.raises(ValueError, match="not a rotation"):
        euler_angles_zyx(scaled)
    with pytest.raises(ValueError, match="mirrors"):
        rotation_part(rotation @ np.diag([1.0, 1.0, -1.0]))


# ---------------------------------------------------------------- directions and frames


@pytest.mark.parametrize("oblique", [False, True])
def test_marker_lands_where_the_formula_says(tmp_path, oblique):
    direction = tuple(zyx_closed_form(0.0, 15.0, -25.0).ravel()) if oblique else None
    marker_at = np.array([3.3, -4.6, 2.2])
    image = marker_image(marker_at, direction=direction)
    center = image_centre(image)
    rotation = zyx_closed_form(*ANGLES)
    # frame(x) = image(T(x)), T(x) = R(x - c) + c + t, so the marker appears at T⁻¹(p)
    expected = rotation.T @ (marker_at - center - SHIFT) + center
    assert np.linalg.norm(expected - marker_at) > 5.0

    snap = tmp_path / "snap.txt"
    snap.write_text(seed003_text(rotation, SHIFT + center - rotation @ center))  # ITK-SNAP: centre folded into offset
    for transform in (euler_zyx(center=center), read_transform(snap)):
        frame = resample_into_frame(image, transform)
        assert np.linalg.norm(centroid(frame) - expected) < 0.5 * min(image.GetSpacing())
        np.testing.assert_allclose(frame.GetDirection(), image.GetDirection(), atol=1e-12)
        np.testing.assert_allclose(frame.GetSpacing(), image.GetSpacing())


def test_translation_moves_content_the_other_way_in_itk_and_slicer():
    marker_at = np.array([1.7, 2.4, -3.1])
    image = marker_image(marker_at)
    shift = sitk.TranslationTransform(3, (10.0, 0.0, 0.0))  # +10 mm along LPS x
    moved = resample_into_frame(image, shift, reference=image)
    seen_at = centroid(moved)
    np.testing.assert_allclose(seen_at, marker_at - [10.0, 0.0, 0.0], atol=0.3)
    # The default frame follows the content: same size, origin 10 mm lower in x.
    grid = frame_grid(image, shift)
    assert grid.size == image.GetSize()
    np.testing.assert_allclose(grid.origin, np.array(image.GetOrigin()) - [10.0, 0.0, 0.0], atol=1e-9)
    # A Slicer node with the to-parent matrix moves the content to where resampling shows it.
    to_parent = slicer_to_parent_ras_matrix(shift)
    displayed_ras = to_parent @ np.array([*(F[:3, :3] @ marker_at), 1.0])
    np.testing.assert_allclose(F[:3, :3] @ displayed_ras[:3], seen_at, atol=0.3)


def test_identity_frame_is_the_input_grid():
    image = make_phantom(direction=tuple(zyx_closed_form(5.0, -10.0, 20.0).ravel()))
    grid = frame_grid(image, sitk.Transform(3, sitk.sitkIdentity))
    assert grid.size == image.GetSize() and grid.spacing == image.GetSpacing()
    np.testing.assert_allclose(grid.origin, image.GetOrigin(), atol=1e-9)
    np.testing.assert_allclose(grid.direction, image.GetDirection(), atol=1e-15)
    same = resample_into_frame(image, sitk.Transform(3, sitk.sitkIdentity), interpolator="nearest")
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(same), sitk.GetArrayViewFromImage(image))


def test_quarter_turn_is_exact_both_ways():
    rng = np.random.default_rng(2)
    labels = sitk.GetImageFromArray(rng.integers(0, 5, size=(16, 24, 20)).astype(np.uint8))  # x=20, y=24, z=16
    labels.SetSpacing((1.0, 1.0, 1.5))
    labels.SetOrigin((-7.0, 3.0, 11.0))
    turn = euler_zyx((0.0, 0.0, 90.0), center=image_centre(labels), translation=(0.0, 0.0, 0.0))
    frame = resample_into_frame(labels, turn, interpolator="nearest")
    assert frame.GetSize() == (24, 20, 16)
    # T maps frame offset (u, v) from the centre to image offset (-v, u): frame[k, j, i] = image[k, i, nx-1-j]
    source = sitk.GetArrayFromImage(labels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(frame), source[:, :, ::-1].transpose(0, 2, 1))
    back = resample_back(frame, turn, labels)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), source)
    assert back.GetPixelID() == labels.GetPixelID()


def test_blob_labels_round_trip_through_the_rotated_frame(tmp_path):
    image = make_phantom(size=(48, 44, 40), spacing=(1.0, 1.0, 1.0))
    array = sitk.GetArrayFromImage(image)
    labels_array = np.zeros(array.shape, np.uint8)
    labels_array[array > 50] = 3
    labels_array[(array > 250) & (array < 380)] = 1
    labels_array[array > 350] = 2
    labels = sitk.GetImageFromArray(labels_array)
    labels.CopyInformation(image)
    path = tmp_path / "snap.txt"
    write_transform(euler_zyx(center=image_centre(image)), path, itk_snap=True)
    transform = read_transform(path)

    frame_image = resample_into_frame(image, transform)
    frame_labels = resample_into_frame(labels, transform, interpolator="nearest")
    assert frame_labels.GetSize() != labels.GetSize()
    assert Grid.of(frame_labels) == Grid.of(frame_image)
    # the whole rotated body is inside the default frame (same volume, within a percent)
    frame_array = sitk.GetArrayFromImage(frame_labels)
    assert abs((frame_array > 0).sum() / (labels_array > 0).sum() - 1) < 0.01
    # labels drawn in the frame from the frame's own image land back on the original blobs
    drawn = (sitk.GetArrayFromImage(frame_image) > 350).astype(np.uint8)
    drawn_image = sitk.GetImageFromArray(drawn)
    drawn_image.CopyInformation(frame_image)
    back_drawn = sitk.GetArrayFromImage(resample_back(drawn_image, transform, image))
    assert dice(back_drawn == 1, labels_array == 2) >= 0.8  # two interpolations of a 5-voxel blob
    back = sitk.GetArrayFromImage(resample_back(frame_labels, transform, image))
    for value in (1, 2, 3):
        assert dice(back == value, labels_array == value) >= 0.95, value


# ---------------------------------------------------------------- Slicer's side


def test_slicer_to_parent_matrix_matches_slicers_own_reader(tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is needed to check Slicer's convention")
    vtk = pytest.importorskip("vtk")

    snap = tmp_path / "snap.txt"
    snap.write_text(seed003_text(zyx_closed_form(*ANGLES), SHIFT))
    scene = slicer.vtkMRMLScene()

    def load(path: Path):
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        storage = scene.AddNewNodeByClass("vtkMRMLTransformStorageNode")
        storage.SetFileName(str(path))
        ok = storage.ReadData(node)
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformToParent(matrix)
        return ok, np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])

    assert load(snap)[0] == 0  # the gap this module closes: Slicer refuses ITK-SNAP's type
    transform = read_transform(snap)
    converted = write_transform(transform, tmp_path / "for_slicer.h5")
    ok, to_parent = load(converted)
    assert ok == 1
    np.testing.assert_allclose(slicer_to_parent_ras_matrix(transform), to_parent, atol=1e-9)
    np.testing.assert_allclose(np.linalg.inv(to_parent), to_ras_matrix(transform), atol=1e-9)
    assert_same_map(transform_from_slicer_to_parent_ras(to_parent), transform)


def test_inverse_transform_undoes_the_map(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(seed003_text(zyx_closed_form(*ANGLES), SHIFT))
    transform = read_transform(path)
    inverse = inverse_transform(transform)
    for point in np.random.default_rng(3).uniform(-100, 100, size=(5, 3)):
        p = tuple(float(v) for v in point)
        np.testing.assert_allclose(inverse.TransformPoint(transform.TransformPoint(p)), p, atol=1e-9)


def test_itk_snap_text_is_the_seed003_form(tmp_path):
    transform = euler_zyx(center=(1.0, 2.0, 3.0))
    text = itk_snap_text(transform)
    path = tmp_path / "snap.txt"
    path.write_text(text)
    assert read_transform(path).GetName() == "AffineTransform"
    assert_same_map(read_transform(path), transform)
    assert text.startswith("#Insight Transform File V1.0\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\n")
