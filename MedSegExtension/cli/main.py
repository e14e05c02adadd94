"""Entry point of the ``medseg`` command.

Exit codes: 0 success; 1 internal error (with a traceback); 2 bad usage or bad input, with one
line naming the file and the problem (a traceback only with ``--debug``); 128 + the signal when
cancelled (130 for Ctrl-C/SIGINT, 143 for SIGTERM, which the Slicer module sends on Cancel).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import CancelledError, MedSegError
from ..progress import CancelToken, SignalCancel, cancel_on_signals

# Each module defines ``add_parser(subparsers)`` and ``run(args, cancel) -> int``.
SUBCOMMANDS = ("models", "predict", "demo", "train", "evaluate", "finetune", "suggest", "web")


def _available_subcommands() -> list:
    modules = []
    for name in SUBCOMMANDS:
        try:
            modules.append(importlib.import_module(f"{__package__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{name}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description="MedSeg: 3D U-Net segmentation of CT and MRI volumes.")
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _available_subcommands():
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return 2
    cancel = CancelToken()
    signals = SignalCancel()
    try:
        with cancel_on_signals(cancel, signals):
            return _run(args, cancel, signals)
    except CancelledError as exc:  # a second signal while the first one's cancel was being reported
        print(f"medseg: {exc}", file=sys.stderr)
        return signals.exit_code


def _run(args: argparse.Namespace, cancel: CancelToken, signals: SignalCancel) -> int:
    try:
        return int(args.run(args, cancel) or 0)
    except CancelledError as exc:
        print(f"medseg: {exc}", file=sys.stderr)
        return signals.exit_code
    except MedSegError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"medseg: error: {exc}", file=sys.stderr)
        return 2
    except Exception:
        traceback.print_exc()
        print("medseg: internal error (please report it with the traceback above)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
