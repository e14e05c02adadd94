"""The extension's CMake lists, read as text: complete by Slicer's conventions, and naming every
file the module imports (module scripts, resources, and the engine it runs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MedSegModule"
ENGINE = "MedSegExtension"
TOP = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
MODULE = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
NOT_IN_SLICER = "MedSegWeb/"  # the web app (``medseg web``) runs outside Slicer; the extension does not ship it


def cmake_code(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def cmake_set(text: str, name: str) -> list[str]:
    match = re.search(rf"\bset\(\s*{name}\b(.*?)\)", cmake_code(text), re.S)
    assert match, f"set({name} ...) missing"
    values = re.findall(r'"[^"]*"|\S+', match.group(1))
    return [value.strip('"').replace("${MODULE_NAME}", "MedSegModule") for value in values]


def call(text: str, command: str) -> str:
    match = re.search(rf"\b{command}\((.*?)\)\s*$", cmake_code(text), re.S | re.M)
    assert match, f"{command}(...) missing"
    return " ".join(match.group(1).split())


def files_under(folder: Path, pattern: str = "*") -> set[str]:
    return {p.relative_to(folder.parent if folder.name == ENGINE else MODULE_DIR).as_posix()
            for p in folder.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts}


def missing_message(variable: str, missing: set[str]) -> str:
    lines = "\n".join(f"  {name}" for name in sorted(missing))
    return f"add to {variable} in the CMake lists:\n{lines}"


def test_top_level_lists_describe_the_extension():
    assert re.search(r"^project\(MedSeg\)", TOP, re.M)
    assert cmake_set(TOP, "EXTENSION_CATEGORY") == ["Segmentation"]
    for variable in ("EXTENSION_HOMEPAGE", "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        assert cmake_set(TOP, variable)[0].startswith("https://")
    assert len(" ".join(cmake_set(TOP, "EXTENSION_DESCRIPTION"))) > 40
    assert cmake_set(TOP, "EXTENSION_CONTRIBUTORS")
    for variable in ("EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS"):
        for url in cmake_set(TOP, variable):
            path = url.split("/main/", 1)[1]
            assert (REPO / path).is_file(), f"{path}: file named in {variable} is missing"
    # SlicerPyTorch first, as TotalSegmentator and MONAIAuto3DSeg declare it: CUDA torch on Windows
    assert cmake_set(TOP, "EXTENSION_DEPENDS") == ["PyTorch"]
    code = cmake_code(TOP)
    order = [code.index(s) for s in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                                      "add_subdirectory(MedSegModule)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
                                      "include(${Slicer_EXTENSION_CPACK})")]
    assert order == sorted(order)


def test_module_is_built_with_slicers_scripted_module_macro():
    assert cmake_set(MODULE, "MODULE_NAME") == ["MedSegModule"]
    assert (MODULE_DIR / "MedSegModule.py").is_file()  # the module name is the file name
    build = call(MODULE, "slicerMacroBuildScriptedModule")
    for part in ("NAME ${MODULE_NAME}", "SCRIPTS ${MODULE_PYTHON_SCRIPTS}", "RESOURCES ${MODULE_PYTHON_RESOURCES}"):
        assert part in build
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in cmake_code(MODULE)


def test_every_module_script_and_resource_is_listed():
    scripts = set(cmake_set(MODULE, "MODULE_PYTHON_SCRIPTS"))
    on_disk = {path for path in files_under(MODULE_DIR, "*.py") if not path.startswith(NOT_IN_SLICER)}
    assert on_disk - scripts == set(), missing_message("MODULE_PYTHON_SCRIPTS", on_disk - scripts)
    assert scripts - on_disk == set(), f"listed but missing: {sorted(scripts - on_disk)}"
    resources = set(cmake_set(MODULE, "MODULE_PYTHON_RESOURCES"))
    on_disk = files_under(MODULE_DIR / "Resources")
    assert on_disk == resources, missing_message("MODULE_PYTHON_RESOURCES", on_disk ^ resources)
    assert "Resources/Icons/MedSegModule.png" in resources  # Slicer's default module icon path


def test_every_engine_file_is_installed_beside_the_module():
    for variable, pattern in (("MEDSEG_ENGINE_PYTHON_SCRIPTS", "*.py"), ("MEDSEG_ENGINE_RESOURCES", "*")):
        listed = set(cmake_set(MODULE, variable))
        on_disk = files_under(REPO / ENGINE, pattern)
        if pattern == "*":
            on_disk = {name for name in on_disk if not name.endswith(".py")}
        assert on_disk - listed == set(), missing_message(variable, on_disk - listed)
        assert listed - on_disk == set(), f"{variable} lists missing files: {sorted(listed - on_disk)}"
    compile_call = call(MODULE, "ctkMacroCompilePythonScript")
    for part in ('SCRIPTS "${MEDSEG_ENGINE_PYTHON_SCRIPTS}"', 'RESOURCES "${MEDSEG_ENGINE_RESOURCES};${MEDSEG_BUNDLED_MODELS}"',
                 "SOURCE_DIR ${MEDSEG_SOURCE_ROOT}", "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}",
                 "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}", "NO_INSTALL_SUBDIR"):
        assert part in compile_call
    assert cmake_set(MODULE, "MEDSEG_SOURCE_ROOT") == ["${CMAKE_CURRENT_SOURCE_DIR}/.."]
    glob = " ".join(re.search(r"file\(GLOB_RECURSE MEDSEG_BUNDLED_MODELS(.*?)\)", MODULE, re.S).group(1).split())
    assert "RELATIVE ${MEDSEG_SOURCE_ROOT}" in glob and "${MEDSEG_SOURCE_ROOT}/Resources/Models/*" in glob


def _module_file(name: str) -> Path | None:
    base = MODULE_DIR if name.split(".")[0] == "MedSegModuleLib" else REPO
    path = base.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Modules of ours that ``path`` imports anywhere (also inside functions), absolute names."""
    package = ".".join(path.relative_to(MODULE_DIR if MODULE_DIR in path.parents else REPO).with_suffix("").parts)
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: -node.level]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in ("MedSegModuleLib", ENGINE)}


def _subcommands() -> list[Path]:
    """``medseg`` imports its subcommands by name (``SUBCOMMANDS`` in cli/main.py)."""
    tree = ast.parse((REPO / ENGINE / "cli" / "main.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SUBCOMMANDS" for t in node.targets):
            names = ast.literal_eval(node.value)
            return [p for p in (REPO / ENGINE / "cli" / f"{name}.py" for name in names) if p.is_file()]
    raise AssertionError("SUBCOMMANDS not found in cli/main.py")


def test_every_file_the_module_imports_is_listed():
    """From the module file and from ``python -m MedSegExtension predict`` (what the module runs)."""
    listed = {MODULE_DIR / s for s in cmake_set(MODULE, "MODULE_PYTHON_SCRIPTS")}
    listed |= {REPO / s for s in cmake_set(MODULE, "MEDSEG_ENGINE_PYTHON_SCRIPTS")}
    todo, seen = [MODULE_DIR / "MedSegModule.py", REPO / ENGINE / "__main__.py", *_subcommands()], set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # a package import runs its __init__ too
                found = _module_file(".".join(parts[:i]))
                if found is not None and found not in seen:
                    todo.append(found)
    assert len(seen) > 40  # the module, its package and the engine modules it reaches
    assert seen - listed == set(), f"imported but not in the CMake lists: {sorted(str(p) for p in seen - listed)}"


def test_resources_the_code_opens_are_listed():
    resources = set(cmake_set(MODULE, "MODULE_PYTHON_RESOURCES"))
    module_code = (MODULE_DIR / "MedSegModule.py").read_text(encoding="utf-8")
    for relative in re.findall(r'resourcePath\("([^"]+)"\)', module_code):
        assert f"Resources/{relative}" in resources
    assert "Resources/requirements.txt" in resources  # read by MedSegModuleLib/dependencies.py


# -- configure for real with CMake, against a stand-in for Slicer's build macros ----------------

STAND_IN = r"""
# What the installed extension would hold: the file copies of slicerMacroBuildScriptedModule and
# ctkMacroCompilePythonScript (same argument rules: paths relative to SOURCE_DIR, kept below
# DESTINATION_DIR), written to a manifest instead of build rules.
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR lib/Slicer-5.10/qt-scripted-modules)
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR ${Slicer_QTSCRIPTEDMODULES_LIB_DIR})
set(MANIFEST ${CMAKE_BINARY_DIR}/manifest.txt)
file(WRITE ${MANIFEST} "")
function(_medseg_copy source_dir)
  foreach(file ${ARGN})
    if(NOT EXISTS ${source_dir}/${file})
      message(FATAL_ERROR "given nonexistent file '${file}'")
    endif()
    file(APPEND ${MANIFEST} "${source_dir}/${file}|${file}\n")
  endforeach()
endfunction()
macro(slicerMacroBuildScriptedModule)
  cmake_parse_arguments(MY "WITH_GENERIC_TESTS" "NAME" "SCRIPTS;RESOURCES" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS OR NOT MY_NAME)
    message(FATAL_ERROR "bad slicerMacroBuildScriptedModule arguments: ${MY_UNPARSED_ARGUMENTS}")
  endif()
  _medseg_copy(${CMAKE_CURRENT_SOURCE_DIR} ${MY_SCRIPTS} ${MY_RESOURCES})
endmacro()
macro(ctkMacroCompilePythonScript)
  cmake_parse_arguments(MY "NO_INSTALL_SUBDIR;GLOBAL_TARGET" "TARGET_NAME;SOURCE_DIR;DESTINATION_DIR;INSTALL_DIR" "SCRIPTS;RESOURCES" ${ARGN})
  get_filename_component(_source ${MY_SOURCE_DIR} REALPATH)
  _medseg_copy(${_source} ${MY_SCRIPTS} ${MY_RESOURCES})
endmacro()
macro(slicer_add_python_unittest)
endmacro()
"""

GENERATE_CONFIG = r"""
foreach(var EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "${var} is not set")
  endif()
endforeach()
"""


def test_cmake_configures_and_installs_a_working_extension_layout(tmp_path):
    """Configure with CMake; lay the files out as installed; import the module's package there."""
    import shutil
    import subprocess
    import sys

    cmake = shutil.which("cmake")
    if cmake is None:
        import pytest

        pytest.skip("cmake is not installed")
    slicer_dir = tmp_path / "FakeSlicer"
    slicer_dir.mkdir()
    (slicer_dir / "UseSlicer.cmake").write_text(STAND_IN)
    (slicer_dir / "GenerateConfig.cmake").write_text(GENERATE_CONFIG)
    (slicer_dir / "Empty.cmake").write_text("")
    (slicer_dir / "SlicerConfig.cmake").write_text(
        f'set(Slicer_USE_FILE "{slicer_dir}/UseSlicer.cmake")\n'
        f'set(Slicer_EXTENSION_GENERATE_CONFIG "{slicer_dir}/GenerateConfig.cmake")\n'
        f'set(Slicer_EXTENSION_CPACK "{slicer_dir}/Empty.cmake")\n'
    )
    build = tmp_path / "build"
    result = subprocess.run([cmake, "-S", str(REPO), "-B", str(build), f"-DSlicer_DIR={slicer_dir}"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    installed = tmp_path / "qt-scripted-modules"
    for line in (build / "manifest.txt").read_text().splitlines():
        source, relative = line.split("|")
        (installed / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, installed / relative)
    assert (installed / "MedSegModule.py").is_file()
    assert (installed / "Resources" / "UI" / "MedSegModule.ui").is_file()
    model_files = {p.relative_to(REPO).as_posix() for p in (REPO / "Resources" / "Models").rglob("*") if p.is_file()}
    assert model_files <= {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()}

    # Only the installed folder on sys.path (as in Slicer): the package finds the engine beside it.
    (installed / "Resources" / "Models").mkdir(parents=True, exist_ok=True)
    probe = (
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; sys.path.insert(0, sys.argv[1])\n"
        "import MedSegModuleLib, MedSegExtension\n"
        "from MedSegExtension.models.card import ModelCard\n"
        "from MedSegModuleLib import model_catalog\n"
        "import MedSegExtension.models.registry as registry\n"
        "print(MedSegModuleLib.engine_root(), MedSegExtension.__file__, registry.bundled_models_dir(), sep='\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(installed)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    root, engine_file, models = result.stdout.split()
    assert Path(root) == installed
    assert Path(engine_file) == installed / ENGINE / "__init__.py"
    assert Path(models) == installed / "Resources" / "Models"
