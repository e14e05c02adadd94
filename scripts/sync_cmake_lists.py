"""Rewrite the engine's file list in MedSegModule/CMakeLists.txt from the files on disk.

Slicer installs only the engine files the CMake lists name, so a new engine module that is not
listed is missing from a built extension; ``Testing/test_cmake_lists.py`` fails until it is.
Run ``python scripts/sync_cmake_lists.py`` after adding or removing an engine module.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CMAKE = REPO / "MedSegModule" / "CMakeLists.txt"
ENGINE = "MedSegExtension"


def engine_scripts() -> list[str]:
    return sorted(path.relative_to(REPO).as_posix() for path in (REPO / ENGINE).rglob("*.py")
                  if "__pycache__" not in path.parts)


def sync(text: str, scripts: list[str]) -> str:
    block = re.compile(r"(set\(MEDSEG_ENGINE_PYTHON_SCRIPTS\n)(.*?)(\n  \))", re.S)
    if not block.search(text):
        raise SystemExit(f"{CMAKE}: no set(MEDSEG_ENGINE_PYTHON_SCRIPTS ...) block")
    return block.sub(lambda m: m.group(1) + "\n".join(f"  {name}" for name in scripts) + m.group(3), text, count=1)


def main() -> None:
    text = CMAKE.read_text(encoding="utf-8")
    updated = sync(text, engine_scripts())
    if updated != text:
        CMAKE.write_text(updated, encoding="utf-8")
        print(f"updated {CMAKE.relative_to(REPO)}")
    else:
        print(f"{CMAKE.relative_to(REPO)} already lists every engine file")


if __name__ == "__main__":
    main()
