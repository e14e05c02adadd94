"""Logic of the MedSeg Slicer module, split by concern; only the GUI modules (``slicer_gui`` and the
section controllers) import ``qt``.

Every function that touches MRML takes the scene and nodes as arguments and uses only the
MRML and module-logic classes that the ``slicer-core`` wheel also provides, so the headless
tests drive exactly the code Slicer runs.

- :mod:`.volume_conversion`: volume node <-> SimpleITK image (RAS <-> LPS, IJK-to-RAS).
- :mod:`.segmentation_nodes`: label map <-> segmentation node, ``.seg.nrrd``, volumes in mL.
- :mod:`.transform_nodes`: ITK transform files -> linear transform nodes, Euler angles, harden.
- :mod:`.background_task`: a subprocess with JSON progress, polled without blocking, cancellable.
- :mod:`.process_tree`: a command's whole process tree (the engine behind ``PythonSlicer``), stopped together.
- :mod:`.segmentation_logic`: one segmentation run, from input node to a new segmentation node.
- :mod:`.model_catalog`: bundled and user models and compute devices, as the panel lists them.
- :mod:`.dependencies`: which Python packages the engine still needs inside Slicer.
- :mod:`.parameters`: the fields of the module's parameter node.
- :mod:`.scene_guard`: "all or nothing" for node creation.
- :mod:`.headless`: a scene with the module logics registered (and Red/Yellow/Green slice views), for scripts and tests.
- :mod:`.engine_run`: the start/poll/cancel/finish pattern for any ``python -m MedSegExtension`` command.
- :mod:`.slice_views`: which voxel slice a slice view shows; moving a view to a voxel slice.
- :mod:`.sparse_annotation`: marked slices on the annotation node, fine-tuning run, copy prediction, suggestions.
- :mod:`.evaluation`: segments matched by name or mapping, evaluation run, metrics table node and Dice chart.
- :mod:`.slicer_gui`: the few helpers that need the Slicer application (dialogs, views).
- :mod:`.sections`, :mod:`.sparse_section`, :mod:`.evaluate_section`: one controller per panel section
  (GUI wiring only, ``qt``; ``sections.RunSection`` follows a background run), so the module file stays thin.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

ENGINE_PACKAGE = "MedSegExtension"


def engine_root() -> Path:
    """The folder that holds the ``MedSegExtension`` engine package.

    Installed extension: the engine is installed beside the module (``qt-scripted-modules``).
    Source checkout (``MedSegModule/`` added as a module path): the repository root.
    """
    module_dir = Path(__file__).resolve().parent.parent
    for candidate in (module_dir, module_dir.parent):
        package = candidate / ENGINE_PACKAGE
        if (package / "__init__.py").is_file() or (package / "__init__.pyc").is_file():  # .pyc: byte-compiled install
            return candidate
    raise ImportError(
        f"MedSeg engine package {ENGINE_PACKAGE!r} not found beside {module_dir} or in {module_dir.parent}; "
        "reinstall the MedSeg extension"
    )


def ensure_engine_importable() -> Path:
    """Put :func:`engine_root` on ``sys.path`` (first) so ``import MedSegExtension`` finds this copy."""
    root = str(engine_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return Path(root)


with contextlib.suppress(ImportError):  # the module still loads; the panel and the self-test say what is missing
    ensure_engine_importable()
