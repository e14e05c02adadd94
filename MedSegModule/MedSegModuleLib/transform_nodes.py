"""ITK transform files as linear transform nodes, their Euler angles, and hardening.

Slicer's own transform reader refuses ``MatrixOffsetTransformBase_double_3_3``, which
ITK-SNAP writes; the engine's reader (:func:`MedSegExtension.transforms.read_transform`)
takes it, and :func:`MedSegExtension.transforms.slicer_to_parent_ras_matrix` gives the
matrix under which a volume shows as ITK resampling through the file shows it, which is
also what Slicer sets for the ``AffineTransform`` files it can read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import slicer
import vtk

from MedSegExtension.errors import InputError

from .scene_guard import nodes_removed_on_error
from .volume_conversion import numpy_matrix, vtk_matrix

TRANSFORM_FILE_FILTER = "ITK transforms (*.txt *.tfm *.h5 *.hdf5)"


def to_parent_matrix_from_file(path: str | os.PathLike[str]) -> np.ndarray:
    """The to-parent RAS matrix for a linear ITK transform file; :class:`InputError` otherwise."""
    from MedSegExtension.transforms import read_transform, slicer_to_parent_ras_matrix

    transform = read_transform(path)
    try:
        matrix = slicer_to_parent_ras_matrix(transform)
    except InputError as exc:  # e.g. a B-spline: MedSeg applies linear transforms only
        raise InputError(f"{path}: {exc}; only linear transforms can be applied") from None
    if not np.all(np.isfinite(matrix)):
        raise InputError(f"{path}: transform matrix is not finite")
    return matrix


def load_itk_transform(scene: Any, path: str | os.PathLike[str], volume_node: Any = None, name: str | None = None) -> Any:
    """A NEW linear transform node from an ITK file (.txt, .tfm, .h5), applied to ``volume_node``.

    The node is inserted between the volume and the volume's current parent transform, so
    an existing registration chain is kept. Errors raise before any node is created.
    """
    path = Path(path)
    matrix = to_parent_matrix_from_file(path)
    base = name or path.name.split(".")[0] or "Transform"
    with nodes_removed_on_error(scene):
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", scene.GenerateUniqueName(base))
        node.SetMatrixTransformToParent(vtk_matrix(matrix))
        node.SetAttribute("MedSeg.SourceFile", str(path))
        if volume_node is not None:
            node.SetAndObserveTransformNodeID(volume_node.GetTransformNodeID())
            volume_node.SetAndObserveTransformNodeID(node.GetID())
    return node


def to_parent_matrix(transform_node: Any) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    if not transform_node.GetMatrixTransformToParent(matrix):
        raise InputError(f"{transform_node.GetName()}: not a linear transform")
    return numpy_matrix(matrix)


def itk_euler_angles(transform_node: Any) -> tuple[float, float, float]:
    """``(rx, ry, rz)`` in degrees (R = Rz·Ry·Rx) of the ITK transform the node stands for.

    These are the angles of the file's matrix (fixed -> moving, LPS), i.e. what ITK-SNAP
    shows for its registration; scaling and shear are removed first.
    """
    from MedSegExtension.transforms import (
        euler_angles_zyx,
        rotation_part,
        transform_from_slicer_to_parent_ras,
    )
    from MedSegExtension.transforms.rotation import affine_matrix

    itk_transform = transform_from_slicer_to_parent_ras(to_parent_matrix(transform_node))
    try:
        return euler_angles_zyx(rotation_part(affine_matrix(itk_transform)))
    except ValueError as exc:
        raise InputError(f"{transform_node.GetName()}: {exc}") from None


def describe_rotation(transform_node: Any | None) -> str:
    """One line for the panel, e.g. ``rotation (ITK, degrees): x 12.0, y -3.5, z 90.0``."""
    if transform_node is None:
        return "no transform"
    try:
        rx, ry, rz = itk_euler_angles(transform_node)
    except InputError as exc:
        return str(exc)
    return f"rotation (ITK, degrees): x {rx:.1f}, y {ry:.1f}, z {rz:.1f}"


def harden_transform(node: Any) -> bool:
    """Bake ``node``'s parent transforms into it (for a volume: its IJK-to-RAS); True when done."""
    if node.GetParentTransformNode() is None:
        return False
    logic = slicer.vtkSlicerTransformLogic()
    if not logic.hardenTransform(node):
        raise InputError(f"{node.GetName()}: Slicer could not harden its transform")
    return True
