"""``MedSegModule.py`` in a Slicer whose Python lacks torch and MONAI (a clean Slicer before the
user clicked "Install"): the module loads, the widget-less logic refuses engine work with one
line, and the self-test entry point (ctest ``py_MedSegModule``, "Reload and Test") skips with
the reason instead of failing.

Runs in a subprocess where ``torch`` and ``monai`` cannot be imported (``sys.modules[name] =
None``, which also makes ``importlib.util.find_spec`` answer None). The module file and its
library are the real ones, on a real slicer-core scene; only Slicer's application framework,
which slicer-core lacks (``qt``, ``slicer.ScriptedLoadableModule``,
``slicer.parameterNodeWrapper``), is a stand-in of a few lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import json, sys, types, unittest
for name in ("torch", "monai"):
    sys.modules[name] = None  # unimportable, as in a clean Slicer
sys.path.insert(0, sys.argv[1])

import slicer  # the slicer-core wheel
from MedSegModuleLib.headless import create_scene

slicer.mrmlScene = create_scene().scene
shown = []


class QTimer:  # the little of qt the module file uses at import and construction
    def __init__(self):
        self.timeout = types.SimpleNamespace(connect=lambda slot: None)

    def setInterval(self, msec):
        pass

    def stop(self):
        pass


qt = types.ModuleType("qt")
qt.QTimer = QTimer
sys.modules["qt"] = qt

framework = types.ModuleType("slicer.ScriptedLoadableModule")


class ScriptedLoadableModule:  # as Slicer's: registers runTest in slicer.selfTests
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def runTest(self, msec=100, **kwargs):
        case = getattr(sys.modules[type(self).__module__], self.moduleName + "Test")()
        case.runTest(**kwargs)


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        shown.append(message)


framework.ScriptedLoadableModule = ScriptedLoadableModule
framework.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
framework.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
framework.ScriptedLoadableModuleLogic = type("ScriptedLoadableModuleLogic", (), {})
sys.modules["slicer.ScriptedLoadableModule"] = framework
wrapper = types.ModuleType("slicer.parameterNodeWrapper")
wrapper.parameterNodeWrapper = lambda cls: cls
sys.modules["slicer.parameterNodeWrapper"] = wrapper

import MedSegModule

loaded_at_import = sorted(name for name in ("SimpleITK", "MedSegModuleLib.self_test", "MedSegModuleLib.segmentation_logic",
                                            "MedSegExtension.inference") if name in sys.modules)
parent = types.SimpleNamespace()
module = MedSegModule.MedSegModule(parent)

logic = MedSegModule.MedSegModuleLogic()
params = types.SimpleNamespace(device=types.SimpleNamespace(value="auto"), modelKey="x", quality=None,
                               computeUncertainty=False, inputVolume=None)
try:
    logic.startSegmentation(params)
    refused = None
except Exception as exc:
    refused = [type(exc).__name__, str(exc)]

slicer.selfTests["MedSegModule"]()  # "Reload and Test" calls it directly: it must not raise
runner = unittest.TextTestRunner(stream=open("/dev/null", "w")).run(MedSegModule.MedSegModuleTest("runTest"))  # as ctest
print(json.dumps({"title": parent.title, "dependencies": parent.dependencies, "loaded_at_import": loaded_at_import,
                  "refused": refused, "shown": shown, "ctest_ok": runner.wasSuccessful(),
                  "ctest_errors": [str(e[1]) for e in runner.errors + runner.failures]}))
'''


def test_module_logic_and_self_test_skip_cleanly_without_torch(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO / "MedSegModule")], capture_output=True, text=True,
                          timeout=120, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["title"] == "MedSeg"
    assert result["dependencies"] == ["Segmentations", "SegmentEditor", "Volumes"]
    assert result["loaded_at_import"] == []  # nothing heavy at Slicer start-up
    kind, message = result["refused"]
    assert kind == "MedSegError" and "not installed" in message and "torch>=2.1,<3" in message and "\n" not in message
    skips = [line for line in result["shown"] if line.startswith("MedSeg self-test skipped: ")]
    assert len(skips) == 2 and all("torch>=2.1,<3" in line and "monai" in line and "Install" in line for line in skips), result["shown"]
    assert "Test passed" not in result["shown"]  # skipped, not claimed as passed
    assert result["ctest_ok"], result["ctest_errors"]
