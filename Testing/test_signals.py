"""SIGTERM (what the Slicer module sends on Cancel) and SIGINT are a cancel: exit 143 / 130, nothing partial.

Real ``medseg`` processes on real files, signalled while they segment or train.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import REPO, make_phantom
from test_sparse_finetune import INFO, labels_on, two_balls

from MedSegExtension.cli.main import main
from MedSegExtension.io.segmentation_files import write_labelmap

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


@pytest.fixture
def env(tiny_model_dir: Path, tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
            "MEDSEG_BUNDLED_MODELS": str(tiny_model_dir.parent), "MEDSEG_HOME": str(tmp_path / "home")}


def signal_when(command: list[str], env: dict[str, str], started, signals: list[int]) -> tuple[int, str]:
    """Run ``medseg COMMAND`` with JSON progress; send ``signals`` once a progress event satisfies ``started``."""
    process = subprocess.Popen([sys.executable, "-m", "MedSegExtension", *command, "--progress", "json"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            if line.startswith("{") and started(json.loads(line)):
                for number in signals:
                    process.send_signal(number)
                    time.sleep(0.02)
                break
        _out, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, "".join(lines) + rest


def leftovers(*folders: Path) -> list[str]:
    """Every file and folder under ``folders`` (hidden ones included)."""
    return sorted(str(p) for folder in folders if folder.exists() for p in folder.rglob("*"))


def test_predict_sigterm_mid_run_exits_143_and_leaves_nothing(env, tmp_path) -> None:
    volume, out = tmp_path / "in" / "head.nii.gz", tmp_path / "out"
    volume.parent.mkdir()
    out.mkdir()
    sitk.WriteImage(make_phantom(size=(96, 96, 96), spacing=(1.0, 1.0, 1.0)), str(volume))
    command = ["predict", str(volume), "-o", str(out / "seg.nii.gz"), "--uncertainty", str(out / "u.nii.gz"),
               "--overlap", "0.9"]  # many windows: it runs for seconds
    rc, err = signal_when(command, env, lambda event: event.get("message", "").startswith("window"), [signal.SIGTERM])
    assert rc == 143, err
    assert "cancelled" in err
    assert leftovers(out) == [] and sorted(p.name for p in volume.parent.iterdir()) == ["head.nii.gz"]


def test_finetune_sigterm_saves_no_model_and_no_output(env, tmp_path) -> None:
    image, truth = two_balls()
    volume, annotation = tmp_path / "balls.nii.gz", tmp_path / "balls.seg.nrrd"
    sitk.WriteImage(image, str(volume))
    write_labelmap(labels_on(image, truth), annotation, INFO)
    out = tmp_path / "out"
    out.mkdir()
    command = ["finetune", str(volume), "--labels", str(annotation), "--slices", "k:14,16,18", "--from-scratch",
               "--name", "balls", "--time-budget", "120", "--max-steps", "100000", "-o", str(out / "dense.seg.nrrd")]
    rc, err = signal_when(command, env, lambda event: event.get("message", "").startswith("step"), [signal.SIGTERM])
    assert rc == 143, err
    assert leftovers(out) == []
    assert leftovers(tmp_path / "home" / "models") == []  # no model, not even a hidden half-written one


def in_process_case(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """For ``main()`` run in this process: the fixture's model and home, a phantom volume, an output folder."""
    for name in ("MEDSEG_BUNDLED_MODELS", "MEDSEG_HOME"):
        monkeypatch.setenv(name, env[name])
    volume, out = tmp_path / "head.nii.gz", tmp_path / "out"
    sitk.WriteImage(make_phantom(), str(volume))
    out.mkdir()
    return volume, out


def test_a_second_signal_during_the_write_stops_at_once_and_removes_the_temporary(
        env, tmp_path, monkeypatch, capsys) -> None:
    """The first SIGTERM lands while the output is being written (too late to skip the write), the second
    interrupts it: exit 143, and the half-made hidden file is gone."""
    volume, out = in_process_case(env, tmp_path, monkeypatch)
    write = sitk.WriteImage

    def write_then_two_signals(image, path, *args):
        write(image, path, *args)
        if Path(path).parent == out:
            assert Path(path).name.lstrip(".").startswith("seg.nii.gz.")  # a temporary, not renamed yet
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sitk, "WriteImage", write_then_two_signals)
    assert main(["predict", str(volume), "-o", str(out / "seg.nii.gz")]) == 143
    assert "stopped by a second SIGTERM" in capsys.readouterr().err
    assert leftovers(out) == []


def test_a_cancel_between_two_outputs_leaves_neither(env, tmp_path, monkeypatch, capsys) -> None:
    """One SIGTERM once the segmentation is written (staged) but before the probabilities are: exit 143
    and no output at all, not a complete segmentation without its probabilities."""
    volume, out = in_process_case(env, tmp_path, monkeypatch)
    write = sitk.WriteImage

    def write_then_signal(image, path, *args):
        write(image, path, *args)
        if Path(path).parent == out and "seg.nii.gz" in Path(path).name:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sitk, "WriteImage", write_then_signal)
    code = main(["predict", str(volume), "-o", str(out / "seg.nii.gz"), "--probabilities", str(out / "p.nii.gz")])
    assert code == 143
    assert leftovers(out) == []
    capsys.readouterr()
    monkeypatch.setattr(sitk, "WriteImage", write)  # and without a signal both are written
    assert main(["predict", str(volume), "-o", str(out / "seg.nii.gz"), "--probabilities", str(out / "p.nii.gz")]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p.nii.gz", "seg.nii.gz"]
