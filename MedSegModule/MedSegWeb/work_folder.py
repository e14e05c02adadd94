"""The web session's own folder: uploads land here under sanitised names, downloads are written here.

Nothing outside this folder is ever read back or served: every path the app builds goes through
:meth:`WorkFolder.path_for`, which refuses names that are empty, hidden, or would leave the
folder. Uploads larger than the limit are refused before anything is written.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import unicodedata
import zipfile
from pathlib import Path

from MedSegExtension.errors import InputError

DEFAULT_UPLOAD_LIMIT_MB = 1024
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitise_name(name: str) -> str:
    """A file name with only ASCII letters, digits, ``._-``: no folders, no leading dots."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    base = _UNSAFE.sub("_", base).lstrip("._")
    return base[:120]


def volume_suffix(name: str) -> str:
    lower = name.lower()
    for suffix in VOLUME_SUFFIXES:
        if lower.endswith(suffix):
            return suffix
    return ""


class WorkFolder:
    """A temporary folder owned by one app process (one session); removed by :meth:`remove`."""

    def __init__(self, upload_limit_mb: float = DEFAULT_UPLOAD_LIMIT_MB, parent: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="medseg-web-", dir=parent)).resolve()
        self.upload_limit_bytes = int(upload_limit_mb * 1024 * 1024)

    def path_for(self, name: str) -> Path:
        """``name`` inside the folder, or :class:`InputError` if it is unsafe."""
        clean = sanitise_name(name)
        if not clean:
            raise InputError(f"{name!r}: not a usable file name")
        path = (self.root / clean).resolve()
        if path.parent != self.root:
            raise InputError(f"{name!r}: outside the session folder")
        return path

    def save_upload(self, name: str, content: bytes) -> Path:
        """Write an uploaded volume (checked: size, known suffix, safe name); a zip is unpacked safely."""
        if len(content) > self.upload_limit_bytes:
            raise InputError(
                f"{name}: upload of {len(content) / 1e6:.1f} MB is over the limit of "
                f"{self.upload_limit_bytes / 1e6:.0f} MB"
            )
        if not volume_suffix(name):
            raise InputError(f"{name}: not a volume file (expected one of {', '.join(VOLUME_SUFFIXES)})")
        path = self.path_for(name)
        if path.exists():
            path = self.path_for(f"{len(list(self.root.iterdir()))}_{path.name}")
        path.write_bytes(content)
        if volume_suffix(path.name) == ".zip":
            return self._unpack(path)
        return path

    def _unpack(self, archive: Path) -> Path:
        """A zipped DICOM folder: members extracted flat under sanitised names, size-checked."""
        target = self.path_for(archive.name[: -len(".zip")] + "_dicom")
        target.mkdir()
        try:
            with zipfile.ZipFile(archive) as zipped:
                members = [m for m in zipped.infolist() if not m.is_dir()]
                if sum(m.file_size for m in members) > self.upload_limit_bytes:
                    raise InputError(f"{archive.name}: unpacked size is over the upload limit")
                for index, member in enumerate(members):
                    name = sanitise_name(member.filename) or "file"
                    (target / f"{index:05d}_{name}").write_bytes(zipped.read(member))
        except zipfile.BadZipFile:
            raise InputError(f"{archive.name}: not a valid zip file") from None
        finally:
            archive.unlink(missing_ok=True)
        return target

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
