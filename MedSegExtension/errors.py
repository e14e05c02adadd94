"""Exception types shared by the engine, the command line and the Slicer module.

Messages are one line, name the file (or model) and the problem, and are shown to users as
they are: the command line prints them without a traceback and exits with code 2.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's text (torch's and pickle's run to several lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else ""


class MedSegError(Exception):
    """Base class of every error MedSeg raises on purpose."""


class InputError(MedSegError):
    """Bad user input: a missing, unreadable, corrupt or unsupported file or value."""


class ModelError(InputError):
    """Unknown model, malformed model card, or weights that fail their checksum."""


class CancelledError(MedSegError):
    """The user cancelled a long operation; nothing was written."""

    def __init__(self, message: str = "cancelled by the user") -> None:
        super().__init__(message)
