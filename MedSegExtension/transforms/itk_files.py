"""Reading and writing ITK transform files (text .txt/.tfm, HDF5 .h5/.hdf5, MATLAB .mat).

Text files are parsed here, not by SimpleITK, because SimpleITK silently accepts a wrong
number of parameters, drops the translation when the ``FixedParameters`` line is missing,
and hands ``MatrixOffsetTransformBase_double_3_3`` (what ITK-SNAP writes; Slicer refuses
it) back as an opaque composite. Every linear type is returned as a SimpleITK class that
Slicer and ITK both read; ITK-SNAP's type becomes an ``AffineTransform`` with the same
matrix, translation and centre. Transforms SimpleITK has a class for but this module does
not build (B-spline, displacement fields) are read by SimpleITK after the text is checked.

Direction: a file holds the fixed→moving (resampling) map in LPS; see ``rotation.py``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.atomic import atomic_output
from ..io.quiet import quiet_itk
from .rotation import _compose, affine_from_matrix, affine_matrix, composite_leaves

TEXT_SUFFIXES = (".txt", ".tfm")
BINARY_SUFFIXES = (".h5", ".hdf5", ".mat")
TRANSFORM_SUFFIXES = TEXT_SUFFIXES + BINARY_SUFFIXES
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
TEXT_HEADER = "#Insight Transform File V1.0"
# Largest ratio of a linear transform's largest to smallest stretch: beyond it, near-singular.
MAX_CONDITION = 1e3

_TYPE_NAME = re.compile(r"^([A-Za-z][A-Za-z0-9]*)_(double|float)_(\d+)_(\d+)$")


def _affine() -> sitk.Transform:
    return sitk.AffineTransform(3)


# base name -> (number of parameters, allowed numbers of fixed parameters, SimpleITK factory)
_BUILDERS: dict[str, tuple[int, tuple[int, ...], Callable[[], sitk.Transform]]] = {
    "AffineTransform": (12, (3,), _affine),
    "MatrixOffsetTransformBase": (12, (3,), _affine),  # ITK-SNAP; same parameter layout
    "Rigid3DTransform": (12, (3,), _affine),  # old ITK files; ITK no longer reads it
    "Euler3DTransform": (6, (3, 4), sitk.Euler3DTransform),  # 4th fixed: ComputeZYX
    "VersorRigid3DTransform": (6, (3,), sitk.VersorRigid3DTransform),
    "VersorTransform": (3, (3,), sitk.VersorTransform),
    "Similarity3DTransform": (7, (3,), sitk.Similarity3DTransform),
    "ScaleVersor3DTransform": (9, (3,), sitk.ScaleVersor3DTransform),
    "ScaleSkewVersor3DTransform": (15, (3,), sitk.ScaleSkewVersor3DTransform),
    "TranslationTransform": (3, (0,), lambda: sitk.TranslationTransform(3)),
    "ScaleTransform": (3, (3,), lambda: sitk.ScaleTransform(3)),
    "IdentityTransform": (0, (0,), lambda: sitk.Transform(3, sitk.sitkIdentity)),
}


@dataclass
class _Block:
    type_name: str
    line: int
    parameters: list[float] | None = None
    fixed: list[float] | None = None
    base: str = field(init=False)

    def __post_init__(self) -> None:
        match = _TYPE_NAME.match(self.type_name)
        self.base = match.group(1) if match else ""


def _numbers(path: Path, line_no: int, tag: str, value: str) -> list[float]:
    numbers = []
    for word in value.split():
        try:
            number = float(word)
        except ValueError:
            raise InputError(f"{path}: line {line_no}: {tag} value {word!r} is not a number") from None
        if not math.isfinite(number):
            raise InputError(f"{path}: line {line_no}: {tag} value {word!r} is not finite")
        numbers.append(number)
    return numbers


def _parse_text(path: Path, text: str) -> list[_Block]:
    blocks: list[_Block] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tag, colon, value = line.partition(":")
        if not colon:
            raise InputError(f"{path}: line {line_no} is not 'Tag: value' (truncated, or not an ITK transform file)")
        tag = tag.strip()
        if tag == "Transform":
            blocks.append(_Block(value.strip(), line_no))
        elif tag in ("Parameters", "FixedParameters"):
            if not blocks:
                raise InputError(f"{path}: line {line_no}: {tag} before any 'Transform:' line")
            attr = "parameters" if tag == "Parameters" else "fixed"
            if getattr(blocks[-1], attr) is not None:
                raise InputError(f"{path}: line {line_no}: second {tag} line for one transform")
            setattr(blocks[-1], attr, _numbers(path, line_no, tag, value))
        # other tags are ignored, as ITK does
    if not blocks:
        raise InputError(f"{path}: no 'Transform:' line; not an ITK transform file")
    return blocks


def _check_block(path: Path, block: _Block, index: int) -> None:
    match = _TYPE_NAME.match(block.type_name)
    if not match:
        raise InputError(f"{path}: unrecognised transform type {block.type_name!r} (line {block.line})")
    dims = (int(match.group(3)), int(match.group(4)))
    if dims != (3, 3):
        raise InputError(f"{path}: {block.type_name} is a {dims[0]}D transform; MedSeg needs 3D")
    if block.base == "CompositeTransform":
        return
    what = f"{block.type_name} (transform {index})"
    if block.parameters is None:
        raise InputError(f"{path}: {what} has no 'Parameters:' line (file truncated?)")
    if block.fixed is None:
        raise InputError(f"{path}: {what} has no 'FixedParameters:' line (file truncated?)")
    if block.base in _BUILDERS:
        n_params, n_fixed, _factory = _BUILDERS[block.base]
        if len(block.parameters) != n_params:
            raise InputError(f"{path}: {what} needs {n_params} parameters, found {len(block.parameters)}")
        if len(block.fixed) not in n_fixed:
            wanted = " or ".join(map(str, n_fixed))
            raise InputError(f"{path}: {what} needs {wanted} fixed parameters, found {len(block.fixed)}")


def _build(block: _Block) -> sitk.Transform:
    _n, _f, factory = _BUILDERS[block.base]
    transform = factory()
    if block.fixed:
        transform.SetFixedParameters(tuple(block.fixed))
    if block.parameters:
        transform.SetParameters(tuple(block.parameters))
    return transform


def _read_text(path: Path) -> sitk.Transform:
    data = path.read_bytes()
    if data.startswith(HDF5_SIGNATURE):
        raise InputError(f"{path}: is an HDF5 file; name it .h5 to read it as one")
    if b"\x00" in data:
        raise InputError(f"{path}: binary data in a text transform file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text file (invalid UTF-8)") from None
    blocks = _parse_text(path, text)
    for index, block in enumerate(blocks):
        _check_block(path, block, index)
    composite = blocks[0].base == "CompositeTransform"
    parts = blocks[1:] if composite else blocks
    if any(block.base == "CompositeTransform" for block in parts):
        raise InputError(f"{path}: nested CompositeTransform; flatten it before saving")
    if not parts:
        raise InputError(f"{path}: CompositeTransform holds no transforms")
    if not composite and len(parts) > 1:
        raise InputError(f"{path}: holds {len(parts)} transforms without a CompositeTransform header; ambiguous")
    if all(block.base in _BUILDERS for block in parts):
        built = [_build(block) for block in parts]
        return built[0] if len(built) == 1 else sitk.CompositeTransform(built)
    unknown = next(block.type_name for block in parts if block.base not in _BUILDERS)
    try:  # checked above; types such as BSplineTransform are left to SimpleITK
        with quiet_itk():
            return sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"{path}: unsupported transform type {unknown}") from None


def _read_binary(path: Path) -> sitk.Transform:
    if path.suffix.lower() in (".h5", ".hdf5"):
        with path.open("rb") as stream:
            if stream.read(8) != HDF5_SIGNATURE:
                raise InputError(f"{path}: not an HDF5 file")
    try:
        with quiet_itk():  # HDF5 prints its error stack on the C-level stderr
            return sitk.ReadTransform(str(path))
    except RuntimeError:
        raise InputError(f"{path}: cannot read transform (truncated, corrupt or unsupported type)") from None


def _normalise(path: Path, transform: sitk.Transform) -> sitk.Transform:
    """3D only, finite, invertible; composites flattened, neighbouring linear parts merged."""
    if transform.GetDimension() != 3:
        raise InputError(f"{path}: {transform.GetName()} is a {transform.GetDimension()}D transform; MedSeg needs 3D")
    leaves = composite_leaves(transform)
    if not leaves:
        raise InputError(f"{path}: CompositeTransform holds no transforms")
    for leaf in leaves:
        values = np.array(leaf.GetParameters() + leaf.GetFixedParameters(), dtype=float)
        if not np.isfinite(values).all():
            raise InputError(f"{path}: {leaf.GetName()} has parameters that are not finite")
    merged: list[sitk.Transform] = []
    run: list[sitk.Transform] = []

    def close_run() -> None:
        if len(run) == 1 and run[0].GetName() != "CompositeTransform":
            merged.append(run[0])
        elif run:
            merged.append(affine_from_matrix(_compose(run)))
        run.clear()

    for leaf in leaves:
        if leaf.IsLinear():
            run.append(leaf)
        else:
            close_run()
            merged.append(leaf)
    close_run()
    result = merged[0] if len(merged) == 1 else sitk.CompositeTransform(merged)
    if all(leaf.IsLinear() for leaf in merged):
        linear = affine_matrix(result)[:3, :3]
        det = float(np.linalg.det(linear))
        if not abs(det) > 1e-9:
            raise InputError(f"{path}: transform matrix is singular (determinant {det:.3g}); cannot be inverted")
        condition = float(np.linalg.cond(linear))
        if condition > MAX_CONDITION:
            raise InputError(
                f"{path}: transform is degenerate (condition number {condition:.3g}, limit {MAX_CONDITION:g}): "
                "it squashes one direction almost flat, and its inverse stretches it"
            )
    return result


def read_transform(path: str | os.PathLike[str]) -> sitk.Transform:
    """Read a 3D ITK transform file; raise :class:`InputError` naming the file if it is unusable.

    Linear types come back as their SimpleITK class (ITK-SNAP's MatrixOffsetTransformBase
    and legacy Rigid3DTransform as AffineTransform); a composite of linear transforms comes
    back as one AffineTransform, a composite of one as its member.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a transform file")
    suffix = path.suffix.lower()
    if suffix not in TRANSFORM_SUFFIXES:
        raise InputError(f"{path}: unsupported transform file type {suffix!r} (use {', '.join(TRANSFORM_SUFFIXES)})")
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: file is empty")
        transform = _read_text(path) if suffix in TEXT_SUFFIXES else _read_binary(path)
    except PermissionError:
        raise InputError(f"{path}: permission denied") from None
    return _normalise(path, transform)


def _number(value: float) -> str:
    text = repr(float(value))  # shortest text that reads back to the same double
    return text[:-2] if text.endswith(".0") else text


def itk_snap_text(transform: sitk.Transform) -> str:
    """The text ITK-SNAP writes: MatrixOffsetTransformBase, matrix row by row, then offset,
    centre zero."""
    h = affine_matrix(transform)
    numbers = " ".join(_number(v) for v in [*h[:3, :3].ravel(), *h[:3, 3]])
    return f"{TEXT_HEADER}\n#Transform 0\nTransform: MatrixOffsetTransformBase_double_3_3\nParameters: {numbers}\nFixedParameters: 0 0 0\n"


def write_transform(transform: sitk.Transform, path: str | os.PathLike[str], *, itk_snap: bool = False) -> Path:
    """Write atomically (.txt, .tfm, .h5, .hdf5, .mat).

    ``itk_snap=True`` writes a linear transform as ITK-SNAP does (text only). Without it the
    file is SimpleITK's own form; a linear transform read by :func:`read_transform` is then
    an AffineTransform or another type Slicer can load.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in TRANSFORM_SUFFIXES:
        raise InputError(f"{path}: unsupported transform file type {suffix!r} (use {', '.join(TRANSFORM_SUFFIXES)})")
    if itk_snap and suffix not in TEXT_SUFFIXES:
        raise InputError(f"{path}: ITK-SNAP's transform form is text; use .txt or .tfm")
    if transform.GetDimension() != 3:
        raise InputError(f"{path}: refusing to write a {transform.GetDimension()}D transform; MedSeg needs 3D")
    with atomic_output(path) as tmp:
        if itk_snap:
            tmp.write_text(itk_snap_text(transform), encoding="utf-8")
        else:
            sitk.WriteTransform(transform, str(tmp))
    return path
