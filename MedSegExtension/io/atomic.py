"""Atomic file output: write to a temporary file beside the target, then rename.

A crash, an error or a cancel never leaves a half-written file under the user's name,
and an existing file is replaced only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

STALE_AFTER_S = 24 * 3600  # a temporary whose owner cannot be checked (Windows, an old name) is stale after this
_PARTIAL = re.compile(r"^\..+?\.(?:(\d+)-)?[^.]*\.partial(\.[^/]*)?$")


def compound_suffix(path: Path) -> str:
    """``.nii.gz``, ``.seg.nrrd`` and the like: the suffixes a writer dispatches on."""
    name = path.name.lower()
    for suffix in (".seg.nrrd", ".nii.gz", ".tar.gz"):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path with the same compound suffix as ``path``; rename on success.

    The temporary file lives in the target's folder so the final ``os.replace`` is atomic.
    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = compound_suffix(target)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}-", suffix=f".partial{suffix}",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file private (0600); give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid() or sys.platform == "win32":  # Windows: os.kill would terminate it; age decides
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale(path: Path, pid: int | None) -> bool:
    """Owned by a dead process, or too old to be anyone's work in progress."""
    try:
        age = time.time() - path.lstat().st_mtime
    except OSError:
        return False
    return age > STALE_AFTER_S or (pid is not None and not _pid_alive(pid))


def stale_temporary(path: Path, prefix: str) -> bool:
    """Whether a temporary named ``<prefix><pid>-…`` was left by a process that is gone."""
    head = path.name[len(prefix):].split("-", 1)[0]
    return is_stale(path, int(head) if head.isdigit() else None)


def remove_stale_partials(folder: Path, depth: int = 2) -> None:
    """Delete the hidden ``.NAME.<pid>-….partial…`` files a killed :func:`atomic_output` left in ``folder``."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _PARTIAL.match(entry.name)
        if match and entry.is_file() and is_stale(entry, int(match.group(1)) if match.group(1) else None):
            entry.unlink(missing_ok=True)
        elif depth > 1 and entry.is_dir() and not entry.is_symlink():
            remove_stale_partials(entry, depth - 1)
