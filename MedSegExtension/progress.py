"""Progress reporting and cooperative cancellation for long work.

Long operations take a ``progress`` callable ``(fraction, message)`` and a
:class:`CancelToken`; they call ``token.raise_if_cancelled()`` at least once per unit of
work (one sliding window, one training step) so a cancel takes effect within one unit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

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


CANCEL_SIGNALS = ("SIGINT", "SIGTERM", "SIGBREAK")  # SIGBREAK: Ctrl-Break on Windows


class SignalCancel:
    """What :func:`cancel_on_signals` saw: the first cancel signal's number, if any."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, the shell's convention (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + (self.signum if self.signum is not None else signal.SIGINT)


@contextlib.contextmanager
def cancel_on_signals(token: CancelToken, seen: SignalCancel | None = None) -> Iterator[SignalCancel]:
    """Make SIGINT, SIGTERM (and SIGBREAK) a cancel of ``token`` while the block runs.

    The first signal only sets the token: the work stops at its next check and writes nothing.
    A second one raises :class:`CancelledError` at once, so ``finally`` blocks still remove
    temporary files. Outside the main thread (embedded use) no handler is installed.
    """
    seen = seen or SignalCancel()

    def handler(signum: int, frame: object) -> None:  # noqa: ARG001 - the signal module's signature
        if seen.signum is not None:
            raise CancelledError(f"stopped by a second {signal.Signals(signum).name}")
        seen.signum = signum
        token.cancel()

    previous = {}
    for name in CANCEL_SIGNALS:
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            previous[number] = signal.signal(number, handler)
        except (ValueError, OSError):  # not the main thread, or not settable here
            break
    try:
        yield seen
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


class ScaledProgress:
    """Maps a sub-task's 0..1 progress into the ``[start, stop]`` span of a parent callback."""

    def __init__(self, parent: ProgressCallback, start: float, stop: float) -> None:
        self.parent, self.start, self.stop = parent, start, stop

    def __call__(self, fraction: float, message: str) -> None:
        fraction = min(max(fraction, 0.0), 1.0)
        self.parent(self.start + (self.stop - self.start) * fraction, message)
