"""Volume node <-> SimpleITK image, keeping geometry exact.

MRML stores voxels in a ``vtkImageData`` (index order i fastest) and the geometry in the
node's IJK-to-RAS matrix; SimpleITK stores origin, spacing and direction in LPS. The two
differ by ``F = diag(-1, -1, 1)``: ``IJKToRAS = F · [direction · diag(spacing) | origin]``.
Only MRML and VTK classes are used (no ``slicer.util``), so this runs headless too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from MedSegExtension.errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def ijk_to_ras_matrix(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)[np.newaxis, :]
    ijk_to_lps[:3, 3] = image.GetOrigin()
    return LPS_TO_RAS @ ijk_to_lps


def geometry_from_ijk_to_ras(matrix: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """``(origin, spacing, direction)`` in LPS, as SimpleITK wants them, from an IJK-to-RAS matrix."""
    ijk_to_lps = LPS_TO_RAS @ np.asarray(matrix, dtype=float)
    columns = ijk_to_lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if np.any(spacing <= 0):
        raise InputError(f"IJK-to-RAS matrix has a zero column (spacing {tuple(spacing)}); the volume geometry is broken")
    direction = columns / spacing[np.newaxis, :]
    return tuple(ijk_to_lps[:3, 3]), tuple(spacing), tuple(direction.ravel())


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            matrix.SetElement(row, column, float(array[row, column]))
    return matrix


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def node_ijk_to_ras(node: Any, world: bool = False) -> np.ndarray:
    """The node's IJK-to-RAS matrix; with ``world``, composed with its (linear) parent transforms."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    result = numpy_matrix(matrix)
    parent = node.GetParentTransformNode()
    if world and parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise InputError(f"{node.GetName()}: its parent transform is not linear; harden it or remove it first")
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        result = numpy_matrix(to_world) @ result
    return result


def check_scalar_volume(node: Any, what: str = "input volume") -> None:
    """Raise :class:`InputError` unless ``node`` is a 3D scalar volume with voxels."""
    if node is None:
        raise InputError(f"no {what} selected")
    name = node.GetName() if hasattr(node, "GetName") else str(node)
    if not node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"{name}: {what} must be a scalar volume, not a {node.GetClassName()}")
    if node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise InputError(f"{name}: {what} is a label map; choose the image volume instead")
    image = node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise InputError(f"{name}: {what} has no voxels (not loaded?)")
    components = image.GetNumberOfScalarComponents()
    if components != 1:
        raise InputError(
            f"{name}: {what} has {components} values per voxel (a 4D, vector or colour volume); "
            "MedSeg segments 3D scalar volumes: pick one time point or channel first"
        )
    if node.IsA("vtkMRMLVectorVolumeNode"):
        raise InputError(f"{name}: {what} is a vector volume; MedSeg segments 3D scalar volumes")
    dims = image.GetDimensions()
    if min(dims) < 2:
        raise InputError(f"{name}: {what} of size {dims} is a single slice, not a 3D volume")


def volume_node_to_sitk(node: Any, world: bool = False) -> sitk.Image:
    """A copy of a scalar volume node's voxels and geometry as a SimpleITK image (LPS)."""
    check_scalar_volume(node, "volume")
    image_data = node.GetImageData()
    dims = image_data.GetDimensions()
    array = numpy_support.vtk_to_numpy(image_data.GetPointData().GetScalars()).reshape(dims[::-1])
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    origin, spacing, direction = geometry_from_ijk_to_ras(node_ijk_to_ras(node, world=world))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image


def _image_data_from_sitk(image: sitk.Image) -> vtk.vtkImageData:
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3D image, got {image.GetDimension()}D of size {image.GetSize()}")
    components = image.GetNumberOfComponentsPerPixel()
    array = sitk.GetArrayFromImage(image)
    image_data = vtk.vtkImageData()
    image_data.SetDimensions(image.GetSize())
    flat = np.ascontiguousarray(array.reshape(-1, components) if components > 1 else array.ravel())
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    image_data.GetPointData().SetScalars(scalars)
    return image_data


def update_volume_node_from_sitk(node: Any, image: sitk.Image) -> None:
    """Replace a volume node's voxels and geometry with ``image``'s."""
    image_data = _image_data_from_sitk(image)
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_matrix(image)))
    node.SetAndObserveImageData(image_data)


def sitk_to_volume_node(scene: Any, image: sitk.Image, name: str, node_class: str = "vtkMRMLScalarVolumeNode") -> Any:
    """A NEW volume node (with display node) holding ``image``; bad input adds nothing."""
    image_data = _image_data_from_sitk(image)  # validates before any node exists
    node = scene.AddNewNodeByClass(node_class, scene.GenerateUniqueName(name))
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras_matrix(image)))
    node.SetAndObserveImageData(image_data)
    node.CreateDefaultDisplayNodes()
    return node
