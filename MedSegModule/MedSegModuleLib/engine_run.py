"""One ``python -m MedSegExtension <command>`` run in the background, for the panel's longer tasks.

Shared by segmentation (:class:`~.segmentation_logic.SegmentationRun`), fine-tuning and
evaluation: check everything on construction (clear errors, nothing created), :meth:`start`
writes the inputs to a temporary folder and starts the engine in a
:class:`~.background_task.BackgroundTask`, :meth:`poll` never blocks, :meth:`cancel` is
non-blocking, and :meth:`finish` turns the exit code into nodes or one-line errors. The
temporary folder is removed whatever happens, but only once the engine's process tree has gone
(never under a running engine), and only a successful run adds nodes. :meth:`shutdown` is the
blocking stop for scene close, widget clean-up and application exit.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from MedSegExtension.errors import CancelledError, InputError, MedSegError

from . import engine_root
from .background_task import (
    EXIT_BAD_INPUT,
    EXIT_CANCELLED,
    EXIT_TERMINATED,
    BackgroundTask,
    TaskEvent,
    python_executable,
)


def engine_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the engine importable, unbuffered UTF-8 output (a
    non-ASCII folder in a "saved model ... in <folder>" line must survive a Windows code page)."""
    env = dict(os.environ)
    root = str(engine_root())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra or {})
    return env


class EngineRun:
    """Subclasses set :attr:`what` and implement :meth:`write_inputs` and :meth:`collect`."""

    what = "engine run"
    failed_what = ""  # the subject of "… failed (exit code N)" where it is not :attr:`what`

    def __init__(self, python: str | None = None, extra_env: Mapping[str, str] | None = None) -> None:
        self.python = python or python_executable()
        self.extra_env = dict(extra_env or {})
        self.task: BackgroundTask | None = None
        self.workdir: Path | None = None
        self.started_at = 0.0

    # -- subclass hooks ----------------------------------------------------------------------
    def write_inputs(self, workdir: Path) -> list[str]:
        """Write the inputs into ``workdir``; return the engine arguments (after ``-m MedSegExtension``)."""
        raise NotImplementedError

    def collect(self, task: BackgroundTask) -> Any:
        """After exit code 0: create the result nodes (all or nothing)."""
        raise NotImplementedError

    # -- running -----------------------------------------------------------------------------
    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="medseg-"))
        try:
            args = [self.python, "-m", "MedSegExtension", *self.write_inputs(self.workdir)]
            self.task = BackgroundTask(args, env=engine_environment(self.extra_env))
            self.started_at = time.monotonic()
            self.task.start()
        except BaseException:
            self.cleanup()
            raise

    def poll(self) -> list[TaskEvent]:
        return self.task.poll() if self.task is not None else []

    @property
    def done(self) -> bool:
        return self.task is not None and self.task.done

    @property
    def fraction(self) -> float:
        return self.task.fraction if self.task is not None else 0.0

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def cleanup(self) -> None:
        """Remove the temporary folder, unless the engine still runs (it would write into a
        deleted folder, or recreate it)."""
        if self.workdir is None:
            return
        if self.task is not None and self.task.started and self.task.tree_alive:
            logging.warning(f"MedSeg: {self.what} still running; kept its folder {self.workdir}")
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir = None

    def shutdown(self, timeout: float | None = None) -> bool:
        """Blocking stop: end the engine's process tree, then remove the temporary files.
        True when the tree has gone (for scene close, widget clean-up and application exit)."""
        gone = self.task.stop(timeout) if self.task is not None and self.task.started else True
        self.cleanup()
        return gone

    def abort(self) -> None:
        """Stop the engine and remove the temporary files (for a caller's error path)."""
        self.shutdown()

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the engine ends (scripts and tests; the panel polls instead)."""
        return self.task.wait(timeout=timeout) if self.task is not None else None

    # -- outcome -----------------------------------------------------------------------------
    def finish(self) -> Any:
        """After :attr:`done`: the new nodes, or the engine's error raised; temporary files go."""
        if self.task is None or not self.task.done:
            raise RuntimeError("finish() called before the run ended")
        try:
            code = self.task.returncode
            if self.task.cancel_requested or code in (EXIT_CANCELLED, EXIT_TERMINATED):
                raise CancelledError(f"{self.what} cancelled; nothing was added to the scene")
            if code == EXIT_BAD_INPUT:
                raise InputError(self.task.error_message())
            if code != 0:
                raise MedSegError(f"{self.failed_what or self.what} failed (exit code {code}): {self.task.error_message()}")
            return self.collect(self.task)
        finally:
            self.cleanup()

    def run(self, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Blocking convenience: start, wait, finish."""
        self.start()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self.done:
                self.poll()
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.what} still running after {timeout} s")
                time.sleep(interval)
        except BaseException:
            self.abort()
            raise
        return self.finish()
