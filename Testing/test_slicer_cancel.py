"""Cancel ends the engine behind a launcher that forwards no signal (as ``PythonSlicer``, CTK's
AppLauncher, does): a stand-in launcher starts the real engine as its child, so the engine is the
module's grandchild; after Cancel it must be gone within 5 s, with no output and no saved model."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_phantom
from MedSegModuleLib.background_task import BackgroundTask
from MedSegModuleLib.scene_guard import node_ids
from MedSegModuleLib.segmentation_nodes import labels_to_segmentation_node
from MedSegModuleLib.sparse_annotation import SparseRun, SparseSettings
from MedSegModuleLib.sparse_slices import set_marked_slices

from MedSegExtension.errors import CancelledError
from MedSegExtension.models.card import LabelInfo
from MedSegExtension.sparse.annotations import SliceRef

pytestmark = pytest.mark.skipif(os.name == "nt", reason="the stand-in launcher and /proc checks are POSIX")

LAUNCHER = '''#!{python}
"""Stand-in for CTK's AppLauncher: runs the Python it wraps as a child, forwards no signal."""
import os, subprocess, sys
child = subprocess.Popen([sys.executable, *sys.argv[1:]])
with open(os.environ["STANDIN_CHILD_PID_FILE"], "w") as stream:
    stream.write(str(child.pid))
sys.exit(child.wait())
'''


@pytest.fixture
def launcher(tmp_path, monkeypatch) -> tuple[str, Path]:
    """(the launcher's path, the file where it writes its child's pid)."""
    path = tmp_path / "PythonSlicer"
    path.write_text(LAUNCHER.format(python=sys.executable))
    path.chmod(0o755)
    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("STANDIN_CHILD_PID_FILE", str(pid_file))
    return str(path), pid_file


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it, but has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def child_pid(pid_file: Path, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while not (pid_file.is_file() and pid_file.read_text()):
        assert time.monotonic() < deadline, "the launcher never started its child"
        time.sleep(0.02)
    return int(pid_file.read_text())


def follow_until_gone(task_or_run, pid: int, limit: float) -> float:
    """Poll (as the panel's timer does) until ``pid`` has ended; the seconds it took."""
    started = time.monotonic()
    while running(pid):
        assert time.monotonic() - started < limit, f"engine pid {pid} still running {limit} s after cancel"
        task_or_run.poll()
        time.sleep(0.05)
    return time.monotonic() - started


def test_cancel_kills_engine_behind_launcher(env, launcher, tmp_path, one_thread_engine):
    """A real fine-tune (600 s budget) through the launcher, cancelled while it trains."""
    python, pid_file = launcher
    image = make_phantom()
    path = tmp_path / "phantom.nrrd"
    sitk.WriteImage(image, str(path))
    volume = env.load_volume(str(path), "Phantom")
    array = sitk.GetArrayFromImage(image)
    labels = sitk.GetImageFromArray(((array > 50) * 1 + (array > 250)).astype(np.uint8))
    labels.CopyInformation(image)
    annotation = labels_to_segmentation_node(env.scene, labels, [LabelInfo(1, "Body", (80, 200, 80)),
                                                                 LabelInfo(2, "Blob", (230, 80, 80))], "Annotation", volume)
    set_marked_slices(annotation, [SliceRef("k", 10), SliceRef("k", 20)])
    home = tmp_path / "home"
    settings = SparseSettings("cancelled-model", from_scratch=True, max_steps=100000, time_budget=600, device="cpu", home=str(home))
    before = node_ids(env.scene)
    run = SparseRun(env.scene, volume, annotation, settings, python=python)
    run.start()
    workdir = run.workdir
    engine = child_pid(pid_file)
    assert engine != run.task.pid and running(engine)
    deadline = time.monotonic() + 180
    while not any(e.kind == "progress" and e.message.startswith("step ") for e in run.poll()):
        assert not run.done, "the fine-tune ended before it could be cancelled: " + run.task.error_message()
        assert time.monotonic() < deadline, "no training step within 180 s"
        time.sleep(0.05)
    run.cancel()
    seconds = follow_until_gone(run, engine, limit=5.0)
    print(f"engine pid {engine} gone {seconds:.2f} s after cancel")
    while not run.done:  # done only once the whole tree has gone: the folder is still there, unused
        run.poll()
        time.sleep(0.02)
    assert workdir.is_dir() and not any(workdir.glob("prediction*")), sorted(p.name for p in workdir.iterdir())
    with pytest.raises(CancelledError, match="fine-tuning cancelled; nothing was added"):
        run.finish()
    assert not workdir.exists()
    assert not (home / "models" / "cancelled-model").exists()
    assert node_ids(env.scene) == before


def test_cancel_kills_an_engine_that_ignores_sigterm(launcher):
    """Without the engine's own SIGTERM handling the tree still goes: SIGKILL after the grace period."""
    python, pid_file = launcher
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(120)"
    task = BackgroundTask([python, "-c", code], grace=1.0)
    task.start()
    engine = child_pid(pid_file)
    while "ready" not in task.lines:
        task.poll()
        time.sleep(0.02)
    task.cancel()
    assert follow_until_gone(task, engine, limit=5.0) >= 1.0  # it outlived SIGTERM, not SIGKILL
    assert task.wait(timeout=10) is not None
    assert task.cancel_requested and not task.tree_alive


def test_stop_blocks_until_the_tree_has_gone(launcher):
    """The path of scene close, widget clean-up and application exit."""
    python, pid_file = launcher
    task = BackgroundTask([python, "-c", "import time\nprint('ready', flush=True)\ntime.sleep(120)"])
    task.start()
    engine = child_pid(pid_file)
    t0 = time.monotonic()
    assert task.stop()
    assert time.monotonic() - t0 < 5.0
    assert not running(engine)


def test_a_straggler_left_by_a_finished_command_is_ended(launcher):
    """The launcher exits 0 but its child lives on in the group: the task ends it before it is done."""
    python, pid_file = launcher
    code = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)"
    task = BackgroundTask([python, "-c", code], grace=0.5)
    task.start()
    assert task.wait(timeout=15) == 0
    assert not task.tree_alive and not task.cancel_requested
