"""Matrices of linear ITK transforms, LPS/RAS conversion, Slicer's direction, Euler angles.

Conventions (all tested in ``Testing/test_transforms.py``):

* An ITK transform maps points of the *fixed* space to the *moving* space, in LPS
  millimetres: ``y = T(x)``. Resampling ``moving`` through ``T`` onto a fixed grid gives
  ``out(x) = moving(T(x))``, so image content moves by ``T⁻¹``: a translation of +10 mm in
  x moves what you see by -10 mm in x.
* ITK's linear transforms are ``T(x) = M·(x - c) + c + t`` (matrix ``M``, translation
  ``t``, centre ``c``); :func:`affine_matrix` returns the 4x4 homogeneous LPS matrix
  ``[[M, t + c - M·c], [0, 0, 0, 1]]`` of the same fixed→moving point map.
* RAS (Slicer's world) differs from LPS by ``F = diag(-1, -1, 1)``; the same point map in
  RAS coordinates is ``F·H·F`` (:func:`to_ras_matrix`).
* A Slicer linear transform node stores the *to parent* transform, which moves the
  volume's content; an ITK file stores the resampling (*from parent*) direction. A node
  that shows a volume as SimpleITK/ITK-SNAP resampling shows it needs ``(F·H·F)⁻¹``
  (:func:`slicer_to_parent_ras_matrix`); that is also what Slicer itself sets when it
  loads an ``AffineTransform`` file.
* Euler angles are for ``R = Rz(rz)·Ry(ry)·Rx(rx)`` (ITK's Euler3DTransform with
  ``ComputeZYX`` on), in degrees, for the matrix as stored (fixed→moving, LPS). The same
  rotation read in RAS has angles ``(-rx, -ry, rz)``.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

_MATRIX_CLASSES = (
    "AffineTransform",
    "Euler3DTransform",
    "VersorRigid3DTransform",
    "VersorTransform",
    "Similarity3DTransform",
    "ScaleVersor3DTransform",
    "ScaleSkewVersor3DTransform",
    "ComposeScaleSkewVersor3DTransform",
    "ScaleTransform",
)


def _downcast(transform: sitk.Transform) -> sitk.Transform:
    return transform.Downcast() if type(transform) is sitk.Transform else transform


def _is_wrapped_leaf(composite: sitk.CompositeTransform) -> bool:
    """SimpleITK shows an ITK type it has no class for (e.g. MatrixOffsetTransformBase) as a
    composite of one whose only child is again such a composite; treat that as a leaf."""
    if composite.GetNumberOfTransforms() != 1:
        return False
    child = _downcast(composite.GetNthTransform(0))
    return isinstance(child, sitk.CompositeTransform) and child.GetNumberOfTransforms() == 1


def composite_leaves(transform: sitk.Transform) -> list[sitk.Transform]:
    """The transforms a (possibly nested) composite applies, in SimpleITK's list order
    (the last one is applied to a point first)."""
    transform = _downcast(transform)
    if not isinstance(transform, sitk.CompositeTransform) or _is_wrapped_leaf(transform):
        return [transform]
    leaves: list[sitk.Transform] = []
    for index in range(transform.GetNumberOfTransforms()):
        leaves.extend(composite_leaves(transform.GetNthTransform(index)))
    return leaves


def _probe_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix of a linear transform from the images of the origin and unit vectors."""
    origin = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    h = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        h[:3, axis] = np.array(transform.TransformPoint(tuple(unit))) - origin
    h[:3, 3] = origin
    return h


def _leaf_matrix(transform: sitk.Transform) -> np.ndarray:
    name = transform.GetName()
    if transform.GetTransformEnum() == sitk.sitkIdentity:
        return np.eye(4)
    if isinstance(transform, sitk.TranslationTransform):
        h = np.eye(4)
        h[:3, 3] = transform.GetOffset()
        return h
    if name in _MATRIX_CLASSES:
        m = np.array(transform.GetMatrix(), dtype=float).reshape(3, 3)
        c = np.array(transform.GetCenter(), dtype=float)
        t = np.array(transform.GetTranslation(), dtype=float) if hasattr(transform, "GetTranslation") else np.zeros(3)
        h = np.eye(4)
        h[:3, :3] = m
        h[:3, 3] = t + c - m @ c
        return h
    if transform.IsLinear():
        return _probe_matrix(transform)
    raise InputError(f"{name} is not a linear transform; it has no matrix")


def affine_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous LPS matrix of the fixed→moving point map of a linear transform.

    Composites are multiplied out. Raises :class:`InputError` for non-linear transforms.
    """
    if transform.GetDimension() != 3:
        raise InputError(f"{transform.GetName()} is {transform.GetDimension()}D; expected a 3D transform")
    return _compose(composite_leaves(transform))


def _compose(leaves: list[sitk.Transform]) -> np.ndarray:
    h = np.eye(4)
    for leaf in leaves:
        h = h @ _leaf_matrix(leaf)  # list order: the last leaf acts on the point first
    return h


def linear_parts(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(M, t, c)`` with ``T(x) = M·(x - c) + c + t`` (LPS, fixed→moving).

    The centre is the transform's own for a single matrix transform and zero otherwise.
    """
    single = composite_leaves(transform)
    h = affine_matrix(transform)
    m = h[:3, :3]
    c = np.zeros(3)
    if len(single) == 1 and single[0].GetName() in _MATRIX_CLASSES:
        c = np.array(single[0].GetCenter(), dtype=float)
    t = h[:3, 3] - c + m @ c
    return m, t, c


def affine_from_matrix(h: np.ndarray, center: np.ndarray | None = None) -> sitk.AffineTransform:
    """An ITK AffineTransform for the 4x4 LPS fixed→moving matrix ``h`` (optional centre)."""
    h = np.asarray(h, dtype=float)
    if h.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {h.shape}")
    m = h[:3, :3]
    c = np.zeros(3) if center is None else np.asarray(center, dtype=float)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(tuple(c))
    affine.SetMatrix(tuple(m.ravel()))
    affine.SetTranslation(tuple(h[:3, 3] - c + m @ c))
    return affine


def _as_matrix(transform_or_matrix: sitk.Transform | np.ndarray) -> np.ndarray:
    if isinstance(transform_or_matrix, sitk.Transform):
        return affine_matrix(transform_or_matrix)
    h = np.asarray(transform_or_matrix, dtype=float)
    if h.shape != (4, 4):
        raise ValueError(f"expected a 4x4 matrix, got shape {h.shape}")
    return h


def to_ras_matrix(transform_or_matrix: sitk.Transform | np.ndarray) -> np.ndarray:
    """The fixed→moving point map in RAS coordinates: ``F·H·F`` with ``F = diag(-1,-1,1,1)``."""
    return LPS_TO_RAS @ _as_matrix(transform_or_matrix) @ LPS_TO_RAS


def slicer_to_parent_ras_matrix(transform_or_matrix: sitk.Transform | np.ndarray) -> np.ndarray:
    """Matrix for ``vtkMRMLLinearTransformNode.SetMatrixTransformToParent``.

    A volume under a node with this matrix is displayed as ITK resampling through the
    transform shows it (the content moves by the inverse of the fixed→moving map).
    """
    return np.linalg.inv(to_ras_matrix(transform_or_matrix))


def transform_from_slicer_to_parent_ras(matrix: np.ndarray) -> sitk.AffineTransform:
    """Inverse of :func:`slicer_to_parent_ras_matrix`: the ITK (fixed→moving, LPS) transform."""
    to_parent = np.asarray(matrix, dtype=float)
    return affine_from_matrix(LPS_TO_RAS @ np.linalg.inv(to_parent) @ LPS_TO_RAS)


def rotation_from_euler_zyx(rx: float, ry: float, rz: float) -> np.ndarray:
    """``R = Rz(rz)·Ry(ry)·Rx(rx)``, angles in degrees."""
    a, b, c = np.radians([rx, ry, rz])
    rot_x = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rot_y = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rot_z = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rot_z @ rot_y @ rot_x


def rotation_part(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest to a 3x3 (or the 3x3 block of a 4x4) matrix with scaling or shear.

    Polar decomposition; raises ValueError for a matrix that mirrors (negative determinant)
    or is singular, which have no rotation to report.
    """
    m = np.asarray(matrix, dtype=float)[:3, :3]
    det = np.linalg.det(m)
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError("matrix is singular; it has no rotation")
    if det < 0:
        raise ValueError("matrix mirrors space (negative determinant); it is not a rotation")
    u, _s, vt = np.linalg.svd(m)
    return u @ vt


def euler_angles_zyx(matrix: np.ndarray, tolerance: float = 1e-6) -> tuple[float, float, float]:
    """``(rx, ry, rz)`` in degrees with ``R = Rz·Ry·Rx``; ``ry`` in [-90, 90].

    ``matrix`` is a rotation (3x3 or a 4x4 whose 3x3 block is one; use :func:`rotation_part`
    first for an affine with scaling). At gimbal lock (``ry = ±90``) only ``rz ∓ rx`` is
    defined; ``rx`` is then reported as 0.
    """
    r = np.asarray(matrix, dtype=float)[:3, :3]
    if not np.allclose(r.T @ r, np.eye(3), atol=tolerance) or np.linalg.det(r) <= 0:
        raise ValueError("matrix is not a rotation (orthonormal, determinant +1); use rotation_part() first")
    cos_ry = math.hypot(r[0, 0], r[1, 0])
    ry = math.atan2(-r[2, 0], cos_ry)
    if cos_ry > 1e-9:
        rx = math.atan2(r[2, 1], r[2, 2])
        rz = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: R01 = -sin(rz ∓ rx), R11 = cos(rz ∓ rx); put it all in rz
        rx = 0.0
        rz = math.atan2(-r[0, 1], r[1, 1])
    return math.degrees(rx), math.degrees(ry), math.degrees(rz)
