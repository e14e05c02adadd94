"""Stopping a command together with everything it started.

Inside Slicer the engine runs under ``PythonSlicer``, which is CTK's AppLauncher: it starts
``python-real`` as its child and forwards no signal. A signal sent to the launcher alone ends
the launcher and leaves the engine running (CPU/GPU held, output still written). So:

- POSIX: the command starts in a new session, i.e. its own process group whose id is the
  launcher's pid, and every signal goes to the whole group (:func:`signal_tree`). The group
  is "alive" while one of its members has not exited (a zombie has exited; on Linux
  ``/proc`` tells them apart, elsewhere ``killpg(pgid, 0)`` answers).
- Windows: a new process group, and the tree is ended with ``taskkill /T /F`` while the
  launcher still runs (Windows finds children by their parent's pid, so a tree whose root
  has gone cannot be found any more). Written for Windows, not run on it by the tests here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

IS_WINDOWS = os.name == "nt"


def new_group_options() -> dict[str, Any]:
    """``subprocess.Popen`` options that make the command the root of its own group."""
    if IS_WINDOWS:
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW  # type: ignore[attr-defined]
        return {"creationflags": flags}
    return {"start_new_session": True}  # also: a Ctrl-C in Slicer's terminal does not reach it


def _linux_group_alive(pgid: int) -> bool | None:
    """True/False from ``/proc`` (zombies do not count); None where there is no ``/proc``."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is still running (POSIX)."""
    found = _linux_group_alive(pgid)
    if found is not None:
        return found
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def tree_alive(process: subprocess.Popen) -> bool:
    """Whether the command or anything it started in its group still runs."""
    if IS_WINDOWS:
        return process.poll() is None
    process.poll()  # reap the launcher if it has ended, so that it no longer counts
    return group_alive(process.pid)


def signal_tree(process: subprocess.Popen, sig: int) -> None:
    """POSIX: send ``sig`` to the command's whole group (nothing happens once it has gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def terminate_tree(process: subprocess.Popen) -> None:
    """The polite stop: SIGTERM to the group (the engine then exits as cancelled, 143).

    Windows has no signal that reaches a windowless console tree from a GUI process, so there
    the polite stop is the hard one.
    """
    if IS_WINDOWS:
        kill_tree(process)
    else:
        signal_tree(process, signal.SIGTERM)


def kill_tree(process: subprocess.Popen) -> None:
    """The hard stop: SIGKILL to the group, or ``taskkill /T /F`` on Windows."""
    if not IS_WINDOWS:
        signal_tree(process, signal.SIGKILL)
        return
    if process.poll() is None:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(process.pid)], capture_output=True,
                       creationflags=subprocess.CREATE_NO_WINDOW, check=False)  # type: ignore[attr-defined]
    if process.poll() is None:
        process.kill()
