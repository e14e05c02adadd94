"""Progress reporting and cooperative cancellation for long work.

Long operations take a ``progress`` callable ``(fraction, message)`` and a
:class:`CancelToken`; they call ``token.raise_if_cancelled()`` at least once per unit of
work (one sliding window, one training step) so a cancel takes effect within one unit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import CancelledError

ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:  # noqa: ARG001 - the default sink
    """A progress sink that ignores everything."""


class CancelToken:
    """A thread-safe flag: set by the GUI or a signal handler, polled by the worker."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise CancelledError()


class ScaledProgress:
    """Maps a sub-task's 0..1 progress into the ``[start, stop]`` span of a parent callback."""

    def __init__(self, parent: ProgressCallback, start: float, stop: float) -> None:
        self.parent, self.start, self.stop = parent, start, stop

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.parent(self.start + (self.stop - self.start) * fraction, message)
