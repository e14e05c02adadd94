"""A command in a subprocess, followed without blocking: JSON progress lines, logs, cancel.

Pure Python (no Qt, no MRML): two reader threads move output lines into a queue and
:meth:`BackgroundTask.poll` drains it, so the Slicer widget can call it from a ``qt.QTimer``
and the GUI never waits. The engine's ``--progress json`` protocol, on stderr::

    {"progress": 0.42, "message": "window batch 3/8"}
    {"log": "model tiny 1.0 on cpu; ..."}
    medseg: error: <one line>            (last line when the command exits with code 2)

:meth:`BackgroundTask.cancel` ends the command's whole process tree (:mod:`.process_tree`:
inside Slicer the engine is the launcher's child, and the launcher forwards no signal): SIGTERM
to the group at once (the engine exits as cancelled, 143), SIGKILL to what is left after
``grace`` seconds. The task is :attr:`~BackgroundTask.done` only once the whole tree has gone, so
a caller may then delete the files the command used. :meth:`BackgroundTask.stop` does the same
and waits (widget clean-up, application exit); tasks still running when Python exits are killed.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import process_tree

ERROR_PREFIX = "medseg: error: "
EXIT_BAD_INPUT = 2
EXIT_CANCELLED = 130  # SIGINT
EXIT_TERMINATED = 143  # SIGTERM, which the engine treats as cancel
CANCEL_GRACE_SECONDS = 3.0

_running: weakref.WeakSet = weakref.WeakSet()  # tasks to kill if Python exits while they run


@dataclass(frozen=True)
class TaskEvent:
    """One line of output: ``kind`` is "progress", "log" (engine log or plain output) or "first_answer"."""

    kind: str
    message: str
    fraction: float | None = None


def parse_line(line: str) -> TaskEvent:
    """Interpret one output line of the engine's JSON progress protocol."""
    text = line.rstrip("\r\n")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            if "progress" in data:
                try:
                    fraction = min(max(float(data["progress"]), 0.0), 1.0)
                except (TypeError, ValueError):
                    fraction = None
                return TaskEvent("progress", str(data.get("message", "")), fraction)
            if "log" in data:
                return TaskEvent("log", str(data["log"]))
            if isinstance(data.get("first_answer"), dict):  # sparse mode's answer before training
                return TaskEvent("first_answer", str(data["first_answer"].get("path", "")))
    return TaskEvent("log", text)


class BackgroundTask:
    """Run ``args`` in a subprocess; :meth:`poll` never blocks."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None,
                 grace: float = CANCEL_GRACE_SECONDS) -> None:
        self.args = [str(a) for a in args]
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.grace = grace
        self.fraction = 0.0
        self.message = ""
        self.lines: list[str] = []
        self.cancel_requested = False
        self._process: subprocess.Popen[str] | None = None
        self._queue: queue.Queue[tuple[str, str | None]] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self._open_streams = 0
        self._cancel_time: float | None = None
        self._killed = False
        self._exit_seen: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("task already started")
        self._process = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **process_tree.new_group_options(),
        )
        _running.add(self)
        for stream, name in ((self._process.stdout, "stdout"), (self._process.stderr, "stderr")):
            thread = threading.Thread(target=self._read, args=(stream, name), daemon=True, name=f"medseg-{name}")
            self._open_streams += 1
            thread.start()
            self._readers.append(thread)

    def _read(self, stream, name: str) -> None:  # runs in a reader thread: only the queue is touched
        try:
            for line in iter(stream.readline, ""):
                self._queue.put((name, line))
        finally:
            stream.close()
            self._queue.put((name, None))

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def returncode(self) -> int | None:
        """The exit code once the process tree has gone and all its output has been read."""
        if self._process is None or self._open_streams > 0 or self._process.poll() is None:
            return None
        if self.tree_alive:
            return None
        return self._process.poll()

    @property
    def tree_alive(self) -> bool:
        """Whether the command or a process it started (the engine behind a launcher) still runs."""
        return self._process is not None and process_tree.tree_alive(self._process)

    @property
    def done(self) -> bool:
        return self.returncode is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- following ---------------------------------------------------------------------
    def poll(self) -> list[TaskEvent]:
        """New events since the last call (never blocks); also advances a pending cancel."""
        events = []
        while True:
            try:
                _name, line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            event = parse_line(line)
            self.lines.append(event.message if event.kind == "log" else line.rstrip("\r\n"))
            if event.kind == "progress" and event.fraction is not None:
                self.fraction, self.message = event.fraction, event.message
            events.append(event)
        self._end_stragglers()
        self._escalate_cancel()
        self._check_orphaned_pipes()
        return events

    def _check_orphaned_pipes(self) -> None:
        """A grandchild that inherited the pipes could keep them open after the process ended."""
        if self._process is None or self._open_streams == 0 or self._process.poll() is None:
            return
        if self._exit_seen is None:
            self._exit_seen = time.monotonic()
        elif time.monotonic() - self._exit_seen > 5.0:
            self._open_streams = 0

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> int | None:
        """Poll until done (for scripts and tests); returns the exit code or None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.done:
            self.poll()
            if self.done:
                break
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(interval)
        self.poll()
        return self.returncode

    # -- cancel ------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the whole process tree: SIGTERM now, SIGKILL after ``grace`` s (POSIX).

        Non-blocking; :meth:`poll` (or :meth:`wait`) carries out the later step.
        """
        self.cancel_requested = True
        self._begin_stop()

    def _begin_stop(self) -> None:
        if self._process is None or self._cancel_time is not None or not self.tree_alive:
            return
        self._cancel_time = time.monotonic()
        process_tree.terminate_tree(self._process)

    def _end_stragglers(self) -> None:
        """The launcher has exited but something it started lives on: end it as for a cancel."""
        if self._process is not None and self._process.poll() is not None and self._cancel_time is None and self.tree_alive:
            self._begin_stop()

    def _escalate_cancel(self) -> None:
        if self._cancel_time is None or self._killed or self._process is None:
            return
        if time.monotonic() - self._cancel_time > self.grace and self.tree_alive:
            self._killed = True
            process_tree.kill_tree(self._process)

    def stop(self, timeout: float | None = None) -> bool:
        """Cancel and wait until the tree has gone (at most ``timeout`` s, default grace + 2 s)."""
        self.cancel()
        self.wait(timeout=self.grace + 2.0 if timeout is None else timeout)
        return not self.tree_alive

    def _kill_at_exit(self) -> None:
        if self._process is not None and self.tree_alive:
            process_tree.kill_tree(self._process)

    # -- outcome -----------------------------------------------------------------------
    def error_message(self) -> str:
        """The one-line reason the command gave for failing (or the last lines of its output)."""
        for line in reversed(self.lines):
            if line.startswith(ERROR_PREFIX):
                return line[len(ERROR_PREFIX):].strip()
        tail = [line for line in self.lines if line.strip()][-3:]
        return " | ".join(tail) if tail else f"exit code {self.returncode}"


def python_executable() -> str:
    """``PythonSlicer`` inside Slicer (same Python, same packages, no GUI), else this interpreter."""
    try:
        import slicer

        in_slicer = hasattr(slicer, "app")
    except ImportError:
        in_slicer = False
    if in_slicer:
        import shutil

        found = shutil.which("PythonSlicer")
        if found:
            return found
        candidate = os.path.join(os.path.dirname(sys.executable), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
        if os.path.exists(candidate):
            return candidate
    return sys.executable


@atexit.register
def _kill_running_tasks() -> None:
    """Python (Slicer) is exiting: no engine may outlive it."""
    for task in list(_running):
        task._kill_at_exit()
