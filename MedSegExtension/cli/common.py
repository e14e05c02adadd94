"""Options shared by the subcommands that run a model."""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import InputError
from ..inference import DEVICE_CHOICES
from .progress_display import ProgressDisplay


def add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name or model folder (default: the bundled default model)")
    parser.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    parser.add_argument("--overlap", type=float, default=0.5, help="sliding-window overlap in [0, 0.95] (default 0.5)")
    parser.add_argument("--window-batch", type=int, help="windows per network call (default 4)")
    parser.add_argument("--tta", action="store_true", help="accurate mode: also predict the left-right mirror, with left and right classes swapped, and average (about 2× slower)")
    parser.add_argument("--no-amp", action="store_true", help="full precision on GPUs (default: bf16/fp16 autocast)")
    parser.add_argument("--progress", default="auto", choices=("auto", "bar", "json", "none"),
                        help="progress display on stderr (auto: a bar when stderr is a terminal)")
    add_memory_argument(parser)


def add_memory_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-memory", metavar="GB",
                        help="refuse inputs whose estimated memory exceeds this (default: $MEDSEG_MAX_MEMORY_GB, "
                             "else half the physical memory)")


def apply_memory_limit(args: argparse.Namespace) -> None:
    from ..limits import set_memory_limit

    set_memory_limit(getattr(args, "max_memory", None))


def inference_options(args: argparse.Namespace, *, probabilities: bool = False, uncertainty: bool = False):
    """The :class:`InferenceOptions` the arguments ask for (imported here: torch loads only when work starts)."""
    from ..inference.pipeline import InferenceOptions

    if not 0.0 <= args.overlap <= 0.95:
        raise InputError(f"--overlap {args.overlap}: must lie in [0, 0.95]")
    if args.window_batch is not None and args.window_batch < 1:
        raise InputError(f"--window-batch {args.window_batch}: must be at least 1")
    return InferenceOptions(
        device=args.device,
        overlap=args.overlap,
        window_batch=args.window_batch,
        tta=args.tta,
        amp=not args.no_amp,
        probabilities=probabilities,
        uncertainty=uncertainty,
    )


def check_output(path: str | Path | None, overwrite: bool) -> None:
    """Refuse to replace an existing file unless asked: it may be someone's segmentation."""
    if path is None:
        return
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: output exists; choose another name or pass --overwrite")
    if path.exists() and path.is_dir():
        raise InputError(f"{path}: output is a folder, not a file name")


def check_writable_folder(folder: str | Path) -> None:
    """Refuse, before the work, an output folder where no file can be created.

    A missing folder is created when the output is written; then its nearest existing
    ancestor must be a writable folder (not a file).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{folder}: cannot create the output folder ({existing} is a file)")
    try:
        fd, probe = tempfile.mkstemp(prefix=".medseg-write-test-", dir=existing)
    except OSError as exc:
        raise InputError(f"{existing}: cannot write in the output folder ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)


def same_file(a: str | Path, b: str | Path) -> bool:
    """One file under two names: equal resolved paths, or the same inode (hard links)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one does not exist
        return False


def check_outputs(outputs: Iterable[tuple[str, str | Path | None]], inputs: Iterable[tuple[str, str | Path | None]],
                  overwrite: bool) -> None:
    """Before any work: each output is new (or ``--overwrite``), has its own file, is never an input
    (not even with ``--overwrite``), and its folder exists and is writable. Pairs are (option, path)."""
    given = [(option, Path(path)) for option, path in outputs if path]
    sources = [(option, Path(path)) for option, path in inputs if path]
    for index, (option, path) in enumerate(given):
        for other_option, other in given[:index]:
            if same_file(path, other):
                raise InputError(f"{path}: given to both {other_option} and {option}; each output needs its own file")
        for source_option, source in sources:
            if same_file(path, source):
                raise InputError(f"{path}: {option} would write over the input given to {source_option}; "
                                 f"MedSeg never replaces an input, even with --overwrite")
        check_output(path, overwrite)
        check_writable_folder(path.parent)


def make_display(args: argparse.Namespace) -> ProgressDisplay:
    return ProgressDisplay(args.progress)
