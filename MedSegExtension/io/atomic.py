"""Atomic file output: write to a temporary file beside the target, then rename.

A crash, an error or a cancel never leaves a half-written file under the user's name,
and an existing file is replaced only once the new one is complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


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
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".partial{suffix}", dir=target.parent)
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
