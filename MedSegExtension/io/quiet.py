"""ITK, GDCM and HDF5 talk on the C-level stderr; users should see one line of ours instead.

:func:`quiet_itk` turns SimpleITK's warning display off and points file descriptor 2 at
/dev/null while a read runs (HDF5 prints its diagnostics stack straight to the descriptor);
:func:`first_line` keeps the useful sentence of an ITK exception text, without source
locations and without the matrix dumps such as "(0 0 1)".
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

import SimpleITK as sitk

_LOCATION = re.compile(r"^(/|[A-Za-z]:\\)|^Exception thrown in |\.(cxx|hxx|h|cpp|txx):\d+")
_PREFIX = re.compile(r"^(sitk::ERROR|itk::ERROR|ITK ERROR|ERROR)\s*:\s*(\w+\(0x[0-9a-fA-F]+\)\s*:\s*)?")
_DUMP = re.compile(r"\(\s*-?[\d.eE+-]+(\s+-?[\d.eE+-]+)+\s*\)|\(0x[0-9a-fA-F]+\)")
_MATRIX_ROW = re.compile(r"^[-\d.eE+\s]+$")


_lock = threading.Lock()
_depth = 0  # nested or concurrent quiet sections share one redirect; the last one out restores
_saved: dict[str, object] = {}


def _enter() -> None:
    global _depth
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _saved["warnings"] = sitk.ProcessObject.GetGlobalWarningDisplay()
        sitk.ProcessObject.SetGlobalWarningDisplay(False)
        try:
            sys.stderr.flush()
            saved = os.dup(2)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)
            _saved["fd"] = saved
        except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded): warnings off is all
            _saved["fd"] = None


def _exit() -> None:
    global _depth
    with _lock:
        _depth -= 1
        if _depth > 0:
            return
        saved = _saved.pop("fd", None)
        if isinstance(saved, int):
            os.dup2(saved, 2)
            os.close(saved)
        sitk.ProcessObject.SetGlobalWarningDisplay(bool(_saved.pop("warnings", True)))


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """Silence ITK warnings and the C-level stderr for the duration (thread-safe, nestable)."""
    _enter()
    try:
        yield
    finally:
        _exit()


def first_line(exc: Exception) -> str:
    """The useful sentence of an ITK exception: no location lines, prefixes, pointers or number dumps."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not _LOCATION.search(line) and not _MATRIX_ROW.match(line)]
    text = _PREFIX.sub("", (useful or [type(exc).__name__])[0])
    text = re.sub(r"\s{2,}", " ", _DUMP.sub("", text)).strip(" :")
    text = re.sub(r"\s+(from|to)( [-\d.eE+]+)+$", "", text)  # "Refusing to change direction from 1 0 0"
    return text[:200] or type(exc).__name__
