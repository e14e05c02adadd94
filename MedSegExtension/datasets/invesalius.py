"""The real head CT in InVesalius' example project ``Cranium.inv3`` (Debian ``invesalius-examples``).

An ``.inv3`` file is a gzip'd tar holding ``main.plist`` (shape, dtype, spacing, modality),
``matrix.dat`` (raw int16, C order z, y, x) and masks ``mask_N.dat`` (uint8, one extra plane at the
start of each axis, which InVesalius uses as a flag; dropped here) with ``mask_N.plist``.

Geometry: the plist gives spacing (x, y, z) but no origin or direction. InVesalius stores axial
slices with z increasing superiorly and the rows flipped for display (row index increasing
anteriorly); columns keep DICOM's right-to-left order. In LPS that is the direction
``(1, 0, 0; 0, -1, 0; 0, 0, 1)``; the origin is put at (0, 0, 0) since the file does not record it.
"""

from __future__ import annotations

import os
import plistlib
import tarfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from . import require_file

CRANIUM = Path(os.environ.get("MEDSEG_INVESALIUS_EXAMPLES", "/usr/share/doc/invesalius-examples/examples")) / "Cranium.inv3"
PROVIDER = "the Debian package invesalius-examples"
DIRECTION = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    return {Path(member.name).name: member for member in tar.getmembers() if member.isfile()}


def _read_member(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, source: Path) -> bytes:
    if name not in members:
        raise InputError(f"{source}: not an InVesalius project (no {name} inside)")
    handle = tar.extractfile(members[name])
    if handle is None:
        raise InputError(f"{source}: cannot read {name}")
    return handle.read()


def _image(array: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(DIRECTION)
    image.SetOrigin((0.0, 0.0, 0.0))
    return image


def load_inv3(path: str | Path = CRANIUM) -> tuple[sitk.Image, dict[str, sitk.Image]]:
    """Read an ``.inv3`` project: the volume (int16 HU for CT) and its masks by name (uint8 0/1)."""
    path = require_file(path, PROVIDER) if Path(path) == CRANIUM else Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _members(tar)
            main = plistlib.loads(_read_member(tar, members, "main.plist", path))
            matrix = main["matrix"]
            shape = tuple(int(n) for n in matrix["shape"])
            dtype = np.dtype(str(matrix["dtype"])).newbyteorder("<")
            raw = _read_member(tar, members, Path(matrix["filename"]).name, path)
            if len(raw) != int(np.prod(shape)) * dtype.itemsize:
                raise InputError(f"{path}: matrix holds {len(raw)} bytes, expected {shape} of {dtype}")
            spacing = tuple(float(s) for s in main["spacing"])
            volume = _image(np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.int16), spacing)  # type: ignore[arg-type]
            masks: dict[str, sitk.Image] = {}
            for _key, plist_name in sorted(main.get("masks", {}).items()):
                info = plistlib.loads(_read_member(tar, members, Path(plist_name).name, path))
                mask_shape = tuple(int(n) for n in info["mask_shape"])
                data = np.frombuffer(_read_member(tar, members, Path(info["mask_file"]).name, path), dtype=np.uint8)
                if data.size != int(np.prod(mask_shape)):
                    raise InputError(f"{path}: {info['mask_file']} does not match its shape {mask_shape}")
                mask = data.reshape(mask_shape)[1:, 1:, 1:]
                if mask.shape != shape:
                    raise InputError(f"{path}: mask {info['mask_file']} shape {mask.shape} differs from the volume {shape}")
                low, high = info.get("threshold_range", ("?", "?"))
                name = f"threshold {low}..{high}"
                masks[name] = _image((mask > 127).astype(np.uint8), spacing)  # type: ignore[arg-type]
    except (tarfile.TarError, OSError, EOFError, KeyError, ValueError, plistlib.InvalidFileException) as exc:
        raise InputError(f"{path}: cannot read InVesalius project ({type(exc).__name__}: {exc})") from None
    return volume, masks


def load_cranium_ct() -> sitk.Image:
    """The Cranium head CT: int16 HU, 256x256x108 (x, y, z), 0.957x0.957x1.5 mm."""
    return load_inv3(CRANIUM)[0]


def load_cranium_masks() -> dict[str, sitk.Image]:
    """Cranium's two threshold masks: ``bone`` (226..3071 HU) and ``head`` (-142..2986 HU), uint8 0/1."""
    _volume, masks = load_inv3(CRANIUM)
    named: dict[str, sitk.Image] = {}
    for name, mask in masks.items():
        low = int(name.split()[1].split("..")[0])
        named["bone" if low > 100 else "head"] = mask
    return named
