"""The module panel (.ui) loaded with PySide6's QUiLoader (offscreen), checked against the code
that uses it: every ``ui.<name>`` exists, every ``SlicerParameterName`` is a parameter-node field
of a type the bound widget can show, and the module file follows Slicer's template, thinly."""

from __future__ import annotations

import ast
import enum
import os
import re
import sys
import typing
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "MedSegModule"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MedSegModule.ui"
MODULE_FILE = MODULE_DIR / "MedSegModule.py"
SECTION_FILES = [MODULE_DIR / "MedSegModuleLib" / f"{name}.py" for name in ("sections", "model_section", "sparse_section", "evaluate_section")]
sys.path.insert(0, str(MODULE_DIR))

from MedSegModuleLib.parameters import DeviceChoice, MedSegParameters, Quality  # noqa: E402

QtWidgets = pytest.importorskip("PySide6.QtWidgets")
QtUiTools = pytest.importorskip("PySide6.QtUiTools")
QtCore = pytest.importorskip("PySide6.QtCore")


@pytest.fixture(scope="module")
def panel():
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    stream = QtCore.QFile(str(UI_FILE))
    assert stream.open(QtCore.QFile.ReadOnly)
    loader = QtUiTools.QUiLoader()
    widget = loader.load(stream)
    stream.close()
    assert widget is not None, loader.errorString()
    yield widget
    widget.deleteLater()
    app.processEvents()


def declared_classes() -> dict[str, str]:
    """objectName -> class as written in the .ui (QUiLoader turns Slicer classes into QWidget)."""
    return {w.get("name"): w.get("class") for w in ET.parse(UI_FILE).iter("widget")}


def bound_widgets(panel) -> dict[str, object]:
    found = {}
    for child in panel.findChildren(QtWidgets.QWidget):
        name = child.property("SlicerParameterName")
        if name:
            assert name not in found, f"two widgets bound to {name}"
            found[name] = child
    return found


def used_ui_names() -> set[str]:
    """``self.ui.<name>`` in the module file and in the section controllers it delegates to."""
    code = "\n".join(path.read_text(encoding="utf-8") for path in (MODULE_FILE, *SECTION_FILES))
    return set(re.findall(r"\bself\.ui\.(\w+)", code)) | set(re.findall(r"\bui\.(\w+)\.", code))


def test_the_ui_file_loads_with_its_sections(panel):
    assert panel.objectName() == "MedSegModule"
    titles = [b.property("text") for b in panel.findChildren(QtWidgets.QWidget) if declared_classes().get(b.objectName()) == "ctkCollapsibleButton"]
    assert titles == ["Input", "Model", "Segment", "Review", "Sparse annotation", "Evaluate"]
    assert declared_classes()["MedSegModule"] == "qMRMLWidget"


def test_every_ui_name_the_module_uses_exists(panel):
    names = {child.objectName() for child in panel.findChildren(QtWidgets.QWidget)}
    used = used_ui_names()
    assert len(used) > 15
    assert used - names == set(), f"MedSegModule.py uses ui names the .ui lacks: {sorted(used - names)}"


def test_every_parameter_name_is_a_field_the_widget_can_show(panel):
    fields = typing.get_type_hints(MedSegParameters)
    classes = declared_classes()
    bound = bound_widgets(panel)
    assert set(bound) - set(fields) == set(), f"SlicerParameterName without a field: {sorted(set(bound) - set(fields))}"
    for name, widget in bound.items():
        kind, declared = fields[name], classes[widget.objectName()]
        if kind is bool:
            assert declared in ("QCheckBox", "ctkCheckBox"), (name, declared)
        elif isinstance(kind, type) and issubclass(kind, enum.Enum):
            assert declared in ("QComboBox", "ctkComboBox"), (name, declared)
        elif kind is int:
            assert declared in ("QSpinBox", "ctkSliderWidget", "QSlider"), (name, declared)
        elif kind is float:
            assert declared in ("QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox"), (name, declared)
        elif kind is str:
            assert declared in ("QLineEdit", "ctkPathLineEdit"), (name, declared)
        else:  # an MRML node class
            assert declared == "qMRMLNodeComboBox", (name, declared)
            node_types = widget.property("nodeTypes")
            assert list(node_types) == [kind.__name__], (name, node_types)
    unbound = set(fields) - set(bound)
    assert unbound == {"modelKey"}  # the model list is filled from code
    assert "modelKey" in MODULE_FILE.read_text(encoding="utf-8")


def test_enum_labels_are_what_the_combo_boxes_show():
    assert DeviceChoice.GPU.label() == "GPU"
    assert "test-time augmentation" in Quality.ACCURATE.label()
    assert [c.value for c in DeviceChoice] == ["auto", "gpu", "cpu"]


def test_node_selectors_receive_the_scene(panel):
    receivers = {c.findtext("receiver") for c in ET.parse(UI_FILE).iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)" and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, cls in declared_classes().items() if cls == "qMRMLNodeComboBox"}
    assert selectors and receivers == selectors


def test_module_file_follows_the_scripted_module_template_and_stays_thin():
    code = MODULE_FILE.read_text(encoding="utf-8")
    tree = ast.parse(code)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    bases = {name: [ast.unparse(b) for b in node.bases] for name, node in classes.items()}
    assert bases["MedSegModule"] == ["ScriptedLoadableModule"]
    assert bases["MedSegModuleWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert bases["MedSegModuleLogic"] == ["ScriptedLoadableModuleLogic"]
    assert bases["MedSegModuleTest"] == ["ScriptedLoadableModuleTest"]
    assert [ast.unparse(d) for d in classes["MedSegModuleParameterNode"].decorator_list] == ["parameterNodeWrapper"]
    for fragment in ('slicer.util.loadUI(self.resourcePath("UI/MedSegModule.ui"))', "slicer.util.childWidgetVariables",
                     "uiWidget.setMRMLScene(slicer.mrmlScene)", "StartCloseEvent", "EndCloseEvent", "connectGui(self.ui)",
                     "disconnectGui", "qt.QTimer"):
        assert fragment in code, fragment
    assert len(code.splitlines()) <= 290
    test_methods = [n.name for n in classes["MedSegModuleTest"].body if isinstance(n, ast.FunctionDef)]
    assert "runTest" in test_methods
    library = "\n".join(p.read_text(encoding="utf-8") for p in (MODULE_DIR / "MedSegModuleLib").glob("*.py"))
    assert "setSourceVolumeNode" in library
    assert "setMasterVolumeNode(" not in library + code  # the removed old name
    assert "SetReferenceActive" not in library and "SetActiveTableID(" in library  # deprecated names
    assert "import slicer.packaging" in library  # slicer.packaging is no attribute until imported (5.12)


def test_self_test_checks_assert_outcomes():
    """MedSegModuleTest delegates to self_test.py: every check there makes real assertions."""
    tree = ast.parse((MODULE_DIR / "MedSegModuleLib" / "self_test.py").read_text(encoding="utf-8"))
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("check_")]
    assert {c.name for c in checks} == {"check_segmentation_workflow", "check_bad_inputs", "check_cancel", "check_itk_snap_transform",
                                        "check_sparse_annotation", "check_sparse_bad_inputs", "check_sparse_cancel",
                                        "check_evaluation"}
    for check in checks:
        source = ast.unparse(check)
        assert source.count("tc.assert") + source.count("assert_allclose") + source.count("_expect_error") >= 3, check.name
    module_code = MODULE_FILE.read_text(encoding="utf-8")
    assert "self_test.selected_checks(" in module_code
    selector = ast.unparse(next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "selected_checks"))
    for check in checks:
        assert f"({check.name}," in selector, f"{check.name} is never run by MedSegModuleTest"


def test_spin_box_ranges_agree_with_the_parameter_node(panel):
    """The GUI connectors set a spin box's range from the field's ``WithinRange`` (a plain float or
    int would make it -inf..inf or +-2**31); the .ui shows the same bounds, and 0 s as "automatic"."""
    hints = typing.get_type_hints(MedSegParameters, include_extras=True)
    bound = bound_widgets(panel)
    checked = 0
    for name, hint in hints.items():
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base, *extras = typing.get_args(hint)
        (limits,) = [e for e in extras if type(e).__name__ == "WithinRange"]
        widget = bound[name]
        assert (widget.minimum(), widget.maximum()) == (limits.minimum, limits.maximum), name
        assert limits.minimum <= getattr(MedSegParameters, name) <= limits.maximum, name
        assert isinstance(limits.minimum, base) and isinstance(limits.maximum, base), name
        checked += 1
    assert checked == 2
    budget = bound["sparseTimeBudget"]
    assert budget.specialValueText() == "automatic" and budget.minimum() == 0.0 == MedSegParameters.sparseTimeBudget
    steps = bound["sparseMaxSteps"]
    assert steps.specialValueText() == "automatic" and steps.minimum() == 0 == MedSegParameters.sparseMaxSteps
