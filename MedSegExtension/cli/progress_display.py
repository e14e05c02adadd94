"""Progress for terminal users (a tqdm bar on stderr) and for programs (JSON lines on stderr).

``--progress json`` is how the Slicer module follows a background ``medseg`` process: each
line is ``{"progress": 0.42, "message": "..."}``.
"""

from __future__ import annotations

import json
import sys
from typing import TextIO

from tqdm import tqdm


class ProgressDisplay:
    """A ``(fraction, message)`` callback that renders as a bar, JSON lines, or nothing."""

    def __init__(self, mode: str = "auto", stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "none"
        self.mode = mode
        self._bar: tqdm | None = None
        self._last_json = -1.0

    def __call__(self, fraction: float, message: str) -> None:
        if self.mode == "json":
            if fraction - self._last_json >= 0.005 or fraction >= 1.0 or fraction < self._last_json:
                self._last_json = fraction
                self.stream.write(json.dumps({"progress": round(fraction, 4), "message": message}) + "\n")
                self.stream.flush()
        elif self.mode == "bar":
            if self._bar is None:
                self._bar = tqdm(total=1000, file=self.stream, bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
            self._bar.set_description_str(message[:40])
            self._bar.n = int(round(min(max(fraction, 0.0), 1.0) * 1000))
            self._bar.refresh()

    def log(self, message: str) -> None:
        """A log line that does not break the bar."""
        if self.mode == "json":
            self.stream.write(json.dumps({"log": message}) + "\n")
            self.stream.flush()
        elif self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            self.stream.write(message + "\n")

    def event(self, key: str, value: dict, message: str) -> None:
        """A ``{key: value}`` line for background callers in JSON mode; ``message`` otherwise."""
        if self.mode == "json":
            self.stream.write(json.dumps({key: value}) + "\n")
            self.stream.flush()
        else:
            self.log(message)

    def result(self, summary: dict) -> None:
        """The final ``{"result": {...}}`` line of ``--progress json``."""
        self.stream.write(json.dumps({"result": summary}) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
