"""What the panel learns without importing torch in Slicer's process: the devices (asked of the
engine's Python in a subprocess), whether a model folder is usable, and the engine's environment."""

from __future__ import annotations

import os
import sys

import pytest
from MedSegModuleLib.engine_run import engine_environment
from MedSegModuleLib.model_catalog import (
    DeviceInfo,
    describe_devices,
    device_argument,
    device_query_result,
    folder_problem,
    start_device_query,
)

from MedSegExtension.errors import ModelError


def test_devices_come_from_the_engine_subprocess():
    import torch

    info = describe_devices()
    assert isinstance(info, DeviceInfo)
    assert info.cuda_available == torch.cuda.is_available()
    assert info.reason.startswith("GPU: ") if info.cuda_available else "no GPU found" in info.reason
    assert device_argument("auto") == "auto"


@pytest.mark.skipif(os.name == "nt", reason="a shebang script stands in for a broken PythonSlicer")
def test_an_engine_that_cannot_start_is_one_line(tmp_path):
    broken = tmp_path / "python"
    broken.write_text(f"#!{sys.executable}\nimport sys\nprint('ImportError: libtorch_cuda.so: cannot open', file=sys.stderr)\nsys.exit(1)\n")
    broken.chmod(0o755)
    task = start_device_query(str(broken))
    assert task.wait(timeout=30) == 1
    with pytest.raises(ModelError, match="could not list compute devices: ImportError: libtorch_cuda.so"):
        device_query_result(task)


def test_a_folder_without_a_card_is_refused_with_its_name(tmp_path, tiny_model_dir):
    assert folder_problem(tiny_model_dir) == ""
    assert folder_problem(tmp_path) == f"{tmp_path}: not a model folder (no model.json)"
    (tmp_path / "model.json").write_text("{ not json")
    assert "cannot read model card" in folder_problem(tmp_path)


def test_engine_output_is_utf8_whatever_the_code_page():
    env = engine_environment()
    assert (env["PYTHONUTF8"], env["PYTHONIOENCODING"], env["PYTHONUNBUFFERED"]) == ("1", "utf-8", "1")
