"""``medseg web``: start the MedSeg web app (trame-slicer, the ``web`` extra) on this machine.

The app lives beside the engine in ``MedSegModule/MedSegWeb`` (it uses the Slicer module's logic),
so the engine does not import it: this command runs it as ``python -m MedSegWeb`` and waits.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from ..errors import InputError
from ..progress import CancelToken

MODULE_DIR = Path(__file__).resolve().parents[2] / "MedSegModule"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("web", help="start the web app (upload, segment, correct, download)",
                                   description=__doc__)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--open", dest="open_path", help="a volume on this machine to load at start")
    parser.add_argument("--max-upload-mb", type=float, default=1024, help="largest accepted upload (default 1024 MB)")
    parser.set_defaults(run=run)


def web_command(args: argparse.Namespace) -> list[str]:
    """The app's command line; checks first that the app and its packages are there."""
    if not 0 <= args.port <= 65535:
        raise InputError(f"--port {args.port}: not a port number")
    if args.open_path and not Path(args.open_path).exists():
        raise InputError(f"{args.open_path}: no such file or folder")
    if not (MODULE_DIR / "MedSegWeb" / "__main__.py").is_file():
        raise InputError(f"{MODULE_DIR / 'MedSegWeb'}: web app not found (it ships with a source checkout of MedSeg)")
    if importlib.util.find_spec("trame_slicer") is None:
        raise InputError("trame-slicer is not installed: pip install -e '.[web]' (the web extra)")
    command = [sys.executable, "-m", "MedSegWeb", "--host", args.host, "--port", str(args.port),
               "--max-upload-mb", str(args.max_upload_mb)]
    if args.open_path:
        command += ["--open", str(Path(args.open_path).resolve())]
    return command


def run(args: argparse.Namespace, cancel: CancelToken) -> int:
    command = web_command(args)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(MODULE_DIR), str(MODULE_DIR.parent), env.get("PYTHONPATH")) if p)
    print(f"MedSeg web app on http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    process = subprocess.Popen(command, env=env)
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if cancel.cancelled:
                process.terminate()
                cancel = CancelToken()  # terminate once, then wait for the app to exit
