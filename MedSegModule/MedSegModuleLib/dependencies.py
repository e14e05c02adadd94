"""Which Python packages the engine still needs inside Slicer, and how to install them safely.

PyTorch comes through the SlicerPyTorch extension (``PyTorchUtils``) when it is installed,
because it picks the build that matches the GPU driver. The rest come from
``Resources/requirements.txt`` with pip, constrained so that Slicer's own numpy, SimpleITK
and VTK are never replaced. The actual installing (dialogs, ``slicer.util``) lives in
:mod:`.slicer_gui` and runs on the main thread after the user agreed.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROTECTED_PACKAGES = ("numpy", "SimpleITK", "vtk")  # Slicer's own: never installed or upgraded by MedSeg
# Pinned while pip installs the rest: MONAI must not replace the torch the PyTorch extension chose
# (a CPU-only build from PyPI on Windows, or a failed upgrade over loaded DLLs).
CONSTRAINED_PACKAGES = (*PROTECTED_PACKAGES, "torch")
TORCH_REQUIREMENT = "torch>=2.1,<3"
REQUIREMENTS_FILE = Path(__file__).resolve().parent.parent / "Resources" / "requirements.txt"
_IMPORT_NAMES = {"pyyaml": "yaml", "simpleitk": "SimpleITK"}


@dataclass(frozen=True)
class Requirement:
    spec: str  # what pip takes, e.g. "monai>=1.3,<2"

    @property
    def project(self) -> str:
        return re.split(r"[<>=!~;\[ ]", self.spec, maxsplit=1)[0].strip()

    @property
    def import_name(self) -> str:
        return _IMPORT_NAMES.get(self.project.lower(), self.project.replace("-", "_"))

    @property
    def specifier(self) -> str:
        return self.spec[len(self.project):].split(";", 1)[0].strip()


def installed_version(project: str) -> str | None:
    try:
        return importlib.metadata.version(project)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_ok(req: Requirement, version: str | None) -> bool:
    """True when ``version`` meets the requirement (or cannot be judged: no version, no ``packaging``)."""
    if version is None or not req.specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet
    except ImportError:
        return True
    return SpecifierSet(req.specifier).contains(version, prereleases=True)


def read_requirements(path: Path = REQUIREMENTS_FILE) -> list[Requirement]:
    """The pip requirements of ``requirements.txt`` (comments and blank lines skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def missing_requirements(
    requirements: Sequence[Requirement] | None = None,
    find_spec: Callable[[str], object] = importlib.util.find_spec,
    version_of: Callable[[str], str | None] = installed_version,
) -> list[Requirement]:
    """Requirements (torch first) that are absent or too old; nothing is imported."""
    wanted = [Requirement(TORCH_REQUIREMENT), *(requirements if requirements is not None else read_requirements())]
    return [req for req in wanted if find_spec(req.import_name) is None or not version_ok(req, version_of(req.project))]


def constraints_text(packages: Sequence[str] = CONSTRAINED_PACKAGES) -> str:
    """pip constraints pinning the installed versions of Slicer's own packages and of torch."""
    lines = []
    for name in packages:
        try:
            lines.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def install_plan(missing: Sequence[Requirement], pytorch_extension: bool) -> list[str]:
    """Lines for the confirmation dialog."""
    plan = []
    for req in missing:
        if req.project == "torch":
            source = "the PyTorch extension (matching your GPU driver)" if pytorch_extension else "pip (install the PyTorch extension to choose the GPU build)"
            plan.append(f"{req.spec} via {source}")
        else:
            plan.append(f"{req.spec} via pip")
    plan.append(f"Slicer's own {', '.join(PROTECTED_PACKAGES)} stay as they are.")
    return plan


def self_test_skip_reason(find_spec: Callable[[str], object] = importlib.util.find_spec) -> str:
    """Why the module's self-test cannot run here ("" when it can); imports nothing.

    The self-test drives the real engine, so it needs the engine package, torch and the other
    requirements, and Slicer's own numpy and SimpleITK.
    """
    from . import engine_root

    try:
        engine_root()
    except ImportError as exc:
        return str(exc)
    absent = [name for name in ("numpy", "SimpleITK") if find_spec(name) is None]
    absent += [req.spec for req in missing_requirements(find_spec=find_spec)]
    if absent:
        return "missing Python packages: " + ", ".join(absent) + " (install them with the MedSeg panel's 'Install' button)"
    return ""
