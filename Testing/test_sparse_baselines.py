"""The sparse-annotation benchmark: Slicer baselines from the slicer-core wheel, slice protocols."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # ``benchmarks`` is not an installed package
    sys.path.insert(0, str(REPO))

from benchmarks.sparse.baselines import (  # noqa: E402
    fill_between_slices,
    from_vtk,
    grow_from_seeds,
    seeds_from_slices,
    to_vtk,
)
from benchmarks.sparse.protocols import (  # noqa: E402
    PROTOCOLS,
    choose_slices,
    merge_slices,
    slices_crossing,
    spread_slices,
    structure_slices,
)
from MedSegExtension.sparse.annotations import SliceRef  # noqa: E402

pytest.importorskip("slicer", reason="needs the slicer-core wheel")

SIZE = (48, 40, 36)  # (i, j, k)
SPACING = (0.9, 1.1, 1.4)
ORIGIN = (-20.0, 31.5, -7.25)
DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def ellipsoid(centre: tuple[float, float, float], radii: tuple[float, float, float]) -> np.ndarray:
    """(k, j, i) bool ellipsoid; centre and radii in voxels (i, j, k)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in SIZE[::-1]), indexing="ij")
    return ((i - centre[0]) / radii[0]) ** 2 + ((j - centre[1]) / radii[1]) ** 2 + ((k - centre[2]) / radii[2]) ** 2 <= 1


def write_read(array: np.ndarray, path: Path) -> sitk.Image:
    """Write ``array`` with the phantom geometry as a real file and read it back."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def same_geometry(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetOrigin(), b.GetOrigin())
            and np.allclose(a.GetSpacing(), b.GetSpacing()) and np.allclose(a.GetDirection(), b.GetDirection()))


@pytest.fixture
def sphere_files(tmp_path: Path) -> tuple[sitk.Image, sitk.Image, np.ndarray]:
    """An off-centre ellipsoid (label 1) and a bright-on-dark noisy image of it, read from .nii.gz files."""
    mask = ellipsoid((20, 22, 17), (12, 10, 11))
    labels = write_read(mask.astype(np.uint8), tmp_path / "labels.nii.gz")
    rng = np.random.default_rng(1)
    intensity = (40.0 + 160.0 * mask + rng.normal(0.0, 12.0, mask.shape)).astype(np.float32)
    image = write_read(intensity, tmp_path / "image.nii.gz")
    return image, labels, mask


def test_vtk_round_trip_keeps_voxel_order_and_geometry(sphere_files) -> None:
    image, _labels, _mask = sphere_files
    array = np.arange(np.prod(SIZE), dtype=np.int32).reshape(SIZE[::-1])
    data = to_vtk(array, image, start=(2, 3, 4))
    assert data.GetDimensions() == SIZE
    assert np.allclose(data.GetOrigin(), image.TransformIndexToPhysicalPoint((2, 3, 4)))
    assert np.allclose(data.GetSpacing(), SPACING)
    assert data.GetScalarComponentAsDouble(5, 6, 7, 0) == array[7, 6, 5]  # vtk (x, y, z) = numpy [k, j, i]
    assert np.array_equal(from_vtk(data, array.shape), array)


def test_fill_between_slices_reconstructs_a_sphere_from_five_axial_slices(sphere_files) -> None:
    _image, labels, mask = sphere_files
    slices = [SliceRef("k", k) for k in (9, 13, 17, 21, 25)]
    result = fill_between_slices(labels, slices)  # the full reference: only the five slices may be used
    assert same_geometry(result, labels)
    assert result.GetPixelID() == labels.GetPixelID()
    filled = sitk.GetArrayFromImage(result) == 1
    assert dice(filled, mask) > 0.85
    # The slices alone are far from the sphere, so the interpolation did the work.
    only_slices = np.zeros_like(mask)
    only_slices[[9, 13, 17, 21, 25]] = mask[[9, 13, 17, 21, 25]]
    assert dice(only_slices, mask) < 0.5
    # Nothing is invented outside the annotated range (k 9..25).
    assert not filled[:9].any() and not filled[26:].any()


def test_fill_between_slices_interpolates_every_label(tmp_path: Path) -> None:
    left, right = ellipsoid((12, 20, 17), (7, 8, 10)), ellipsoid((34, 18, 17), (8, 7, 9))
    labels = write_read((left * 1 + right * 2).astype(np.uint8), tmp_path / "two.nii.gz")
    result = sitk.GetArrayFromImage(fill_between_slices(labels, [SliceRef("k", k) for k in (10, 14, 18, 22, 26)]))
    assert dice(result == 1, left) > 0.8
    assert dice(result == 2, right) > 0.8


def test_seeds_from_complete_slices(sphere_files) -> None:
    _image, labels, mask = sphere_files
    seeds, background = seeds_from_slices(labels, [SliceRef("k", 12), SliceRef("j", 30)])
    assert background == 2
    array = sitk.GetArrayFromImage(seeds)
    assert same_geometry(seeds, labels)
    assert np.array_equal(array[12], np.where(mask[12], 1, 2))
    assert np.array_equal(array[:, 30], np.where(mask[:, 30], 1, 2))
    assert not array[13:, :30].any()  # unannotated voxels stay unknown


def test_grow_from_seeds_recovers_a_bright_sphere_from_two_slices(sphere_files) -> None:
    image, labels, mask = sphere_files
    seeds, background = seeds_from_slices(labels, [SliceRef("k", 12), SliceRef("k", 22)])
    result = grow_from_seeds(image, seeds, background, extent_growth=None)
    assert same_geometry(result, image)
    array = sitk.GetArrayFromImage(result)
    assert set(np.unique(array).tolist()) == {0, 1}  # the background seed value is mapped to 0
    assert dice(array == 1, mask) > 0.8


def test_grow_from_seeds_stays_in_slicers_region(sphere_files) -> None:
    image, labels, mask = sphere_files
    seeds, background = seeds_from_slices(labels, [SliceRef("k", 16), SliceRef("k", 18)])
    array = sitk.GetArrayFromImage(grow_from_seeds(image, seeds, background))  # seeds' box + max(3, 20 %)
    grown = array == 1
    assert grown[13:22].any() and not grown[:13].any() and not grown[22:].any()
    assert dice(grown[13:22], mask[13:22]) > 0.9


def test_grow_from_seeds_needs_background(sphere_files) -> None:
    image, labels, _mask = sphere_files
    seeds, _background = seeds_from_slices(labels, [SliceRef("k", 12)])
    with pytest.raises(ValueError, match="background"):
        grow_from_seeds(image, seeds, background_value=7)


@pytest.mark.parametrize("count", [1, 3, 5, 10])
def test_parallel_slices_are_distinct_and_inside_the_structure(count: int) -> None:
    mask = ellipsoid((20, 22, 17), (12, 10, 11))
    slices = spread_slices(mask, count, "k")
    indices = [ref.index for ref in slices]
    assert len(set(indices)) == count and all(ref.axis == "k" for ref in slices)
    assert all(6 <= k <= 28 for k in indices)  # the ellipsoid spans k 6..28
    assert all(mask[k].any() for k in indices)
    if count == 1:
        assert indices == [17]  # the middle
    if count == 3:
        assert np.allclose(indices, [11.5, 17, 22.5], atol=0.5)  # the quartiles of k 6..28


def test_thin_structure_gets_as_many_slices_as_it_has() -> None:
    mask = np.zeros(SIZE[::-1], dtype=bool)
    mask[10:13, 5:20, 5:20] = True
    assert [ref.index for ref in spread_slices(mask, 5, "k")] == [10, 11, 12]


@pytest.mark.parametrize("name", ["ortho-1", "ortho-3"])
def test_orthogonal_slices_on_each_axis(name: str) -> None:
    mask = ellipsoid((20, 22, 17), (12, 10, 11))
    protocol = PROTOCOLS[name]
    slices = structure_slices(mask, protocol)
    assert len(set(slices)) == protocol.slices_per_structure
    for axis, array_axis in (("i", 2), ("j", 1), ("k", 0)):
        on_axis = [ref.index for ref in slices if ref.axis == axis]
        assert len(on_axis) == protocol.per_axis
        assert all(mask.take(index, axis=array_axis).any() for index in on_axis)
    if name == "ortho-1":
        assert set(slices) == {SliceRef("i", 20), SliceRef("j", 22), SliceRef("k", 17)}  # the centre


def test_merged_slices_reuse_nearby_ones_and_cover_every_structure(sphere_files) -> None:
    image, _labels, _mask = sphere_files
    left, right = ellipsoid((12, 20, 17), (7, 8, 10)), ellipsoid((34, 18, 18), (8, 7, 9))
    reference = sitk.GetImageFromArray((left * 1 + right * 2).astype(np.uint8))
    reference.CopyInformation(image)
    slices = choose_slices(image, reference, [1, 2], PROTOCOLS["parallel-3"])
    # Both span about the same k range: their quartile slices coincide within 2 voxels and are shared.
    assert len(slices) == 3 and all(ref.axis == "k" for ref in slices)
    assert slices_crossing(left, slices) == 3 and slices_crossing(right, slices) == 3
    # Far-apart structures keep their own slices.
    far = merge_slices([(left, [SliceRef("k", 10)]), (right, [SliceRef("k", 20)])])
    assert far == [SliceRef("k", 10), SliceRef("k", 20)]


def test_itk_threads_do_not_crash_the_interpreter_at_exit() -> None:
    """slicer-core's ITK (TBB threader) segfaults at exit after contour interpolation; baselines avoids it."""
    code = (
        "import numpy as np, SimpleITK as sitk\n"
        "from benchmarks.sparse.baselines import fill_between_slices\n"
        "from MedSegExtension.sparse.annotations import SliceRef\n"
        "k, j, i = np.mgrid[:64, :64, :64]\n"
        "a = (((k - 32) ** 2 + (j - 30) ** 2 + (i - 34) ** 2) < 400).astype(np.uint8)\n"
        "fill_between_slices(sitk.GetImageFromArray(a), [SliceRef('k', z) for z in (16, 24, 32, 40, 48)])\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "ITK_GLOBAL_DEFAULT_THREADER"}
    for _ in range(3):  # without the fix, most runs end in SIGSEGV (return code -11)
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-500:]
